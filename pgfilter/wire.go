package pgfilter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire-level errors.
var (
	// ErrMalformed is a frame whose length field cannot be right.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge is a frame longer than the configured limit.
	ErrTooLarge = errors.New("message too large")
)

// Codes of the untyped startup-phase packets.
const (
	protocolVersion30 = 3 << 16
	cancelRequestCode = 1234<<16 | 5678
	sslRequestCode    = 1234<<16 | 5679
	gssEncRequestCode = 1234<<16 | 5680

	// maxStartupPacket mirrors PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacket = 10000
	// streamThreshold is the body size above which a frame that no hook
	// inspects is streamed rather than read whole.
	streamThreshold = 64 << 10
)

// frameReader reads typed protocol frames from a buffered reader. A body it
// returns is valid only until the next call, like pgproto3's Receive.
type frameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

func newFrameReader(r *bufio.Reader, maxBody int) *frameReader {
	return &frameReader{r: r, max: maxBody}
}

// header reads the next frame header: its type byte and body length. The
// body must then be consumed with body, stream or skip.
func (fr *frameReader) header() (byte, int, error) {
	h, err := fr.r.Peek(5)
	if err != nil {
		if len(h) > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, err
	}
	typ := h[0]
	n := int64(binary.BigEndian.Uint32(h[1:5]))
	if n < 4 {
		return typ, 0, fmt.Errorf("%w: message type %q has length %d", ErrMalformed, typ, n)
	}
	if _, err := fr.r.Discard(5); err != nil {
		return typ, 0, err
	}
	return typ, int(n - 4), nil
}

// body reads a whole body of n bytes, enforcing the size limit.
func (fr *frameReader) body(typ byte, n int) ([]byte, error) {
	if n > fr.max {
		return nil, fmt.Errorf("%w: message type %q of %d bytes exceeds the limit of %d bytes", ErrTooLarge, typ, n, fr.max)
	}
	if n <= fr.r.Size() {
		// Zero copy: the bytes stay in the reader's buffer until the
		// next read.
		b, err := fr.r.Peek(n)
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		_, _ = fr.r.Discard(n)
		return b, nil
	}
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return nil, unexpectedEOF(err)
	}
	if cap(fr.buf) > 4*streamThreshold {
		// Do not pin a huge buffer for the rest of the session.
		fr.buf = nil
	}
	return b, nil
}

// stream copies a body of n bytes to w without holding it.
func (fr *frameReader) stream(w io.Writer, n int) error {
	if _, err := io.CopyN(w, fr.r, int64(n)); err != nil {
		return unexpectedEOF(err)
	}
	return nil
}

// buffered reports whether bytes are waiting in the read buffer.
func (fr *frameReader) buffered() bool { return fr.r.Buffered() > 0 }

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// frameWriter writes frames into a buffered writer.
//
// barrier, when set, runs before any buffered byte can reach the
// connection: before a flush, and before a write that does not fit in what
// is left of the buffer (bufio would flush, or write through). The client
// writer's barrier waits for the audit records of the statements whose
// completions are in the buffer (see session.awaitRecords); an error
// stops the bytes.
type frameWriter struct {
	w       *bufio.Writer
	hdr     [5]byte
	barrier func() error
}

// fits runs the barrier unless n more bytes fit in the buffer.
func (fw *frameWriter) fits(n int) error {
	if fw.barrier == nil || n <= fw.w.Available() {
		return nil
	}
	return fw.barrier()
}

// writeHeader writes a frame's header; its body of n bytes follows.
func (fw *frameWriter) writeHeader(typ byte, n int) error {
	return fw.writeFrameStart(typ, n, 5)
}

// writeFrameStart writes a frame's header once size bytes fit or the
// barrier has run.
func (fw *frameWriter) writeFrameStart(typ byte, n, size int) error {
	if err := fw.fits(size); err != nil {
		return err
	}
	fw.hdr[0] = typ
	binary.BigEndian.PutUint32(fw.hdr[1:], uint32(n+4))
	_, err := fw.w.Write(fw.hdr[:])
	return err
}

func (fw *frameWriter) write(typ byte, body []byte) error {
	if err := fw.writeFrameStart(typ, len(body), 5+len(body)); err != nil {
		return err
	}
	_, err := fw.w.Write(body)
	return err
}

// writeEncoded writes an already encoded message (as pgproto3's Encode
// produces it: type byte, length, body).
func (fw *frameWriter) writeEncoded(b []byte) error {
	if err := fw.fits(len(b)); err != nil {
		return err
	}
	_, err := fw.w.Write(b)
	return err
}

// stream copies n bytes of a frame body from fr straight through: the
// barrier runs first, since the body may not fit in the buffer.
func (fw *frameWriter) stream(fr *frameReader, n int) error {
	if fw.barrier != nil {
		if err := fw.barrier(); err != nil {
			return err
		}
	}
	return fr.stream(fw.w, n)
}

func (fw *frameWriter) flush() error {
	if fw.barrier != nil {
		if err := fw.barrier(); err != nil {
			return err
		}
	}
	return fw.w.Flush()
}

// discard drops what is buffered and not yet sent.
func (fw *frameWriter) discard(w io.Writer) { fw.w.Reset(w) }

// readStartupPacket reads one untyped startup-phase packet (length-prefixed)
// and returns its payload after the length: the 4-byte code and the rest.
func readStartupPacket(r io.Reader) ([]byte, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(lenBuf[:]))
	if n < 8 || n > maxStartupPacket {
		return nil, fmt.Errorf("%w: startup packet length %d", ErrMalformed, n)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, unexpectedEOF(err)
	}
	return buf, nil
}

// startupRequest is a decoded startup-phase packet.
type startupRequest struct {
	code uint32
	// For a StartupMessage: its parameters, in order, and the _pq_ options.
	params    []param
	pqOptions []string
	// For a CancelRequest: the key.
	pid    uint32
	secret []byte
}

type param struct{ name, value string }

// parseStartupPacket decodes a payload returned by readStartupPacket.
func parseStartupPacket(p []byte) (*startupRequest, error) {
	if len(p) < 4 {
		return nil, fmt.Errorf("%w: startup packet too short", ErrMalformed)
	}
	req := &startupRequest{code: binary.BigEndian.Uint32(p)}
	rest := p[4:]
	switch req.code {
	case sslRequestCode, gssEncRequestCode:
		if len(rest) != 0 {
			return nil, fmt.Errorf("%w: %d trailing bytes in encryption request", ErrMalformed, len(rest))
		}
		return req, nil
	case cancelRequestCode:
		// Protocol 3.2 allows keys of up to 256 bytes.
		if len(rest) < 8 || len(rest) > 4+256 {
			return nil, fmt.Errorf("%w: cancel request of %d bytes", ErrMalformed, len(p))
		}
		req.pid = binary.BigEndian.Uint32(rest)
		req.secret = append([]byte(nil), rest[4:]...)
		return req, nil
	}
	if req.code>>16 != 3 {
		return nil, fmt.Errorf("%w: unsupported frontend protocol %d.%d: server supports 3.0", ErrMalformed, req.code>>16, req.code&0xffff)
	}
	// name\0value\0 ... \0
	seen := map[string]bool{}
	for {
		name, r, ok := cstring(rest)
		if !ok {
			return nil, fmt.Errorf("%w: startup packet parameters not terminated", ErrMalformed)
		}
		rest = r
		if name == "" {
			break
		}
		value, r, ok := cstring(rest)
		if !ok {
			return nil, fmt.Errorf("%w: startup parameter %q has no value", ErrMalformed, name)
		}
		rest = r
		if seen[name] {
			return nil, fmt.Errorf("%w: startup parameter %q given twice", ErrMalformed, name)
		}
		seen[name] = true
		if len(name) > 5 && name[:5] == "_pq_." {
			req.pqOptions = append(req.pqOptions, name)
			continue
		}
		req.params = append(req.params, param{name, value})
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after startup parameters", ErrMalformed, len(rest))
	}
	return req, nil
}

func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", b, false
}
