package pgcluster

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// tailLines is how many server output lines a failed start reports.
const tailLines = 30

// maxLineBytes caps one buffered line without a newline.
const maxLineBytes = 64 << 10

// serverLog receives the server's stdout and stderr: it splits the stream
// into lines, logs each line, appends it to the log file and keeps the last
// lines for error messages. Writes after close are dropped, so nothing is
// logged once Stop has returned.
type serverLog struct {
	mu      sync.Mutex
	logger  *slog.Logger
	file    *os.File // nil: no file
	partial []byte
	tail    []string
	closed  bool
}

func newServerLog(logger *slog.Logger, file *os.File) *serverLog {
	return &serverLog{logger: logger, file: file}
}

// Write implements io.Writer; it never fails, so the server never blocks
// or gets EPIPE because of logging.
func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return len(p), nil
	}
	if l.file != nil {
		_, _ = l.file.Write(p) // best effort: the logger still gets the line
	}
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > maxLineBytes {
		l.line(string(l.partial))
		l.partial = nil
	}
	if len(l.partial) == 0 {
		l.partial = nil // let the backing array go
	}
	return len(p), nil
}

func (l *serverLog) line(s string) {
	s = strings.TrimRight(s, "\r")
	if s == "" {
		return
	}
	l.tail = append(l.tail, s)
	if len(l.tail) > tailLines {
		l.tail = l.tail[len(l.tail)-tailLines:]
	}
	l.logger.Log(context.Background(), lineLevel(s), "postgres output", "line", s)
}

// Tail returns the last lines the server wrote, newline separated.
func (l *serverLog) Tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.tail
	if len(l.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(l.partial))
	}
	return strings.Join(lines, "\n")
}

// Close flushes a last unterminated line, closes the file and drops any
// later writes.
func (l *serverLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if len(l.partial) > 0 {
		l.line(string(l.partial))
		l.partial = nil
	}
	l.closed = true
	if l.file != nil {
		return l.file.Close()
	}
	return nil
}

// severityLevel maps PostgreSQL's message severities (and the labels of
// the lines that follow a message) to slog levels.
func severityLevel(word string) (slog.Level, bool) {
	switch word {
	case "PANIC":
		return slog.LevelError, true
	case "FATAL", "ERROR", "WARNING":
		return slog.LevelWarn, true
	case "LOG", "INFO", "NOTICE", "DETAIL", "HINT", "CONTEXT", "STATEMENT", "LOCATION", "QUERY":
		return slog.LevelInfo, true
	case "DEBUG1", "DEBUG2", "DEBUG3", "DEBUG4", "DEBUG5":
		return slog.LevelDebug, true
	}
	return 0, false
}

// lineLevel maps a server log line to a slog level by its first severity
// label ("LOG:  ", "ERROR:  ", ...; the server puts two spaces after it).
// Clients' mistakes (a failed login, a bad statement) show up as ERROR and
// FATAL lines too, so only PANIC is an error here.
func lineLevel(s string) slog.Level {
	for rest := s; ; {
		i := strings.Index(rest, ":  ")
		if i < 0 {
			return slog.LevelInfo
		}
		word := rest[:i]
		if j := strings.LastIndexAny(word, " ]"); j >= 0 {
			word = word[j+1:]
		}
		if level, ok := severityLevel(word); ok {
			return level
		}
		rest = rest[i+3:]
	}
}
