package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// DefaultKeyName is the name of a generated checkpoint signing key.
const DefaultKeyName = "custos-audit"

// Errors of keys and checkpoints.
var (
	// ErrKey: a signing or verifier key cannot be read or parsed.
	ErrKey = errors.New("invalid audit key")
	// ErrCheckpoint: a checkpoint is not in the expected format.
	ErrCheckpoint = errors.New("invalid audit checkpoint")
)

// Checkpoint is a signed statement that the journal held records 1..Seq,
// the last with hash Hash, at Time. It is a C2SP signed note
// (golang.org/x/mod/sumdb/note, Ed25519) whose text follows the C2SP
// tlog-checkpoint layout:
//
//	custos.audit/<journal id>      origin
//	<seq>                          number of records (the last seq)
//	<base64 of the last hash>      chain head (32 zero bytes when empty)
//	time <RFC 3339, UTC, ns>       extension line: when it was signed
//
// A checkpoint is written every CheckpointInterval even when nothing was
// recorded, so that a gap in the checkpoints, not only in the records, is
// visible.
type Checkpoint struct {
	Origin string
	Seq    uint64
	Hash   Hash
	Time   time.Time
}

// originPrefix starts every checkpoint origin.
const originPrefix = "custos.audit/"

// Text returns the note text of c.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\ntime %s\n", c.Origin, c.Seq,
		base64.StdEncoding.EncodeToString(c.Hash[:]), c.Time.UTC().Format(timeLayout))
}

// parseCheckpoint parses a verified note's text.
func parseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 5 || lines[4] != "" {
		return Checkpoint{}, fmt.Errorf("%w: want 4 lines", ErrCheckpoint)
	}
	c := Checkpoint{Origin: lines[0]}
	if !strings.HasPrefix(c.Origin, originPrefix) {
		return Checkpoint{}, fmt.Errorf("%w: origin %q", ErrCheckpoint, c.Origin)
	}
	seq, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: seq: %w", ErrCheckpoint, err)
	}
	c.Seq = seq
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != HashSize {
		return Checkpoint{}, fmt.Errorf("%w: hash %q", ErrCheckpoint, lines[2])
	}
	copy(c.Hash[:], h)
	ts, ok := strings.CutPrefix(lines[3], "time ")
	if !ok {
		return Checkpoint{}, fmt.Errorf("%w: no time line", ErrCheckpoint)
	}
	if c.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: time: %w", ErrCheckpoint, err)
	}
	return c, nil
}

// checkpointLine is one line of checkpoints.jsonl.
type checkpointLine struct {
	Note string `json:"note"`
}

// signCheckpoint returns the checkpoints.jsonl line of c signed by s.
func signCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	b, err := json.Marshal(checkpointLine{Note: string(msg)})
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// openCheckpoint decodes one checkpoints.jsonl line and verifies its
// signature with v.
func openCheckpoint(line []byte, v note.Verifier) (Checkpoint, error) {
	var cl checkpointLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cl); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	n, err := note.Open([]byte(cl.Note), note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, err
	}
	return parseCheckpoint(n.Text)
}

// GenerateKey returns a new Ed25519 checkpoint signing key and its verifier
// key in the note formats ("PRIVATE+KEY+name+hash+key" and
// "name+hash+key").
func GenerateKey(name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// VerifierKey returns the verifier key of the signing key skey.
func VerifierKey(skey string) (string, error) {
	skey = strings.TrimSpace(skey)
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", fmt.Errorf("%w: not a note signing key", ErrKey)
	}
	if _, err := note.NewSigner(skey); err != nil {
		return "", fmt.Errorf("%w: %w", ErrKey, err)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", fmt.Errorf("%w: not an Ed25519 key", ErrKey)
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrKey, err)
	}
	return vkey, nil
}

// ReadVerifierKey reads a verifier key file (the output of `custos audit
// key`).
func ReadVerifierKey(path string) (note.Verifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKey, path, err)
	}
	return v, nil
}

// loadSigner reads the signing key at path; with create, a missing key is
// generated (0600) together with its verifier key next to it (path +
// ".pub").
func loadSigner(path string, create bool) (note.Signer, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		skey, vkey, gerr := GenerateKey(DefaultKeyName)
		if gerr != nil {
			return nil, "", gerr
		}
		if err := writeFileSync(path, []byte(skey+"\n"), 0o600); err != nil {
			return nil, "", err
		}
		if err := writeFileSync(path+".pub", []byte(vkey+"\n"), 0o644); err != nil {
			return nil, "", err
		}
		b = []byte(skey)
	} else if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrKey, err)
	}
	skey := strings.TrimSpace(string(b))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s: %w", ErrKey, path, err)
	}
	vkey, err := VerifierKey(skey)
	if err != nil {
		return nil, "", err
	}
	return s, vkey, nil
}
