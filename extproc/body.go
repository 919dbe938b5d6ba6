package extproc

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"

	"github.com/custos-dev/custos/internal/mask"
)

// Errors of body inspection; each refuses the response.
var (
	errEncoding = errors.New("unsupported content-encoding")
	errTooLarge = errors.New("body larger than custos may inspect")
	errCorrupt  = errors.New("compressed body does not decompress")
)

// coding is a content-encoding custos can undo and redo.
type coding int

const (
	codingIdentity coding = iota
	codingGzip
	codingDeflate
)

// codingOf parses a content-encoding header: identity, gzip (x-gzip) or
// deflate. Anything else, several codings included, cannot be inspected.
func codingOf(v string) (coding, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "identity":
		return codingIdentity, nil
	case "gzip", "x-gzip":
		return codingGzip, nil
	case "deflate":
		return codingDeflate, nil
	}
	return 0, fmt.Errorf("%w %q (custos inspects identity, gzip and deflate bodies)", errEncoding, v)
}

// MaskBody masks a response body as custos does for Envoy: the body is
// decompressed as contentEncoding says (identity, gzip, deflate), masked
// as JSON when contentType is JSON (rules by JSON path, card numbers
// detected when detect is set, sensitive authentication data members
// always removed) and as text otherwise, and compressed again. It returns
// body itself and false when nothing was masked. maxBytes bounds the
// decompressed size. An error means the body could not be inspected and
// must not be sent.
func MaskBody(m *mask.Masker, body []byte, contentType, contentEncoding string,
	paths map[string]string, detect bool, reveal string, maxBytes int,
) ([]byte, mask.Counts, error) {
	c, err := codingOf(contentEncoding)
	if err != nil {
		return nil, mask.Counts{}, err
	}
	if len(body) == 0 {
		return body, mask.Counts{}, nil
	}
	plain := body
	if c != codingIdentity {
		if plain, err = decompress(c, body, maxBytes); err != nil {
			return nil, mask.Counts{}, err
		}
	} else if len(plain) > maxBytes {
		return nil, mask.Counts{}, fmt.Errorf("%w (%d bytes, limit %d)", errTooLarge, len(plain), maxBytes)
	}
	var (
		out    []byte
		counts mask.Counts
	)
	if isJSON(contentType) {
		rules := make(map[string]mask.Strategy, len(paths))
		for p, s := range paths {
			st, err := mask.ParseStrategy(s)
			if err != nil {
				st = mask.Null // an unknown strategy shows nothing
			}
			rules[p] = st
		}
		out, counts, err = m.JSON(plain, rules, detect)
		if err != nil {
			return nil, mask.Counts{}, fmt.Errorf("json body: %w", err)
		}
	} else {
		out = plain
		if detect {
			out, counts = m.Text(nil, plain, revealStrategy(reveal))
		}
	}
	if counts.IsZero() && bytes.Equal(out, plain) {
		return body, counts, nil
	}
	if c == codingIdentity {
		return out, counts, nil
	}
	packed, err := compress(c, out)
	if err != nil {
		return nil, mask.Counts{}, err
	}
	return packed, counts, nil
}

// maskBody masks a whole response body with the stream's rules.
func (st *procStream) maskBody(body []byte) ([]byte, bool, error) {
	r := st.rules()
	out, c, err := MaskBody(st.s.opts.Masker, body, st.resp.contentType, st.resp.contentEncoding,
		r.JSONPaths, r.DetectPAN, r.Reveal, st.s.opts.MaxBodyBytes)
	if err != nil {
		return nil, false, err
	}
	changed := !c.IsZero() || !bytes.Equal(out, body)
	st.masked.Add(c)
	if changed {
		st.s.metrics.bodies.WithLabelValues("masked").Inc()
		st.s.metrics.masked.WithLabelValues("pan").Add(float64(c.PANs))
		st.s.metrics.masked.WithLabelValues("sad").Add(float64(c.SAD))
	} else {
		st.s.metrics.bodies.WithLabelValues("unchanged").Inc()
	}
	return out, changed, nil
}

// reveal is the strategy detected card numbers are shown with.
func (st *procStream) reveal() mask.Strategy { return revealStrategy(st.rules().Reveal) }

// revealStrategy maps mask.reveal to a strategy: bin_last4 where granted,
// the masker's default otherwise.
func revealStrategy(reveal string) mask.Strategy {
	if reveal == string(mask.BINLast4) {
		return mask.BINLast4
	}
	return ""
}

// isJSON reports whether a content-type is JSON: application/json or a
// +json type (application/problem+json, application/vnd.api+json).
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(strings.Split(contentType, ";")[0]))
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func decompress(c coding, body []byte, maxBytes int) ([]byte, error) {
	var r io.Reader
	switch c {
	case codingGzip:
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", errCorrupt, err)
		}
		defer zr.Close()
		r = zr
	case codingDeflate:
		// RFC 9110 deflate is zlib; some servers send raw deflate.
		br := bufio.NewReader(bytes.NewReader(body))
		if hdr, err := br.Peek(2); err == nil && (uint16(hdr[0])<<8|uint16(hdr[1]))%31 == 0 && hdr[0]&0x0f == 8 {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("%w: deflate: %w", errCorrupt, err)
			}
			defer zr.Close()
			r = zr
		} else {
			fr := flate.NewReader(br)
			defer fr.Close()
			r = fr
		}
	default:
		return body, nil
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if len(out) > maxBytes {
		return nil, fmt.Errorf("%w (decompressed, limit %d bytes)", errTooLarge, maxBytes)
	}
	return out, nil
}

func compress(c coding, body []byte) ([]byte, error) {
	var buf bytes.Buffer
	var w io.WriteCloser
	switch c {
	case codingGzip:
		w = gzip.NewWriter(&buf)
	case codingDeflate:
		w = zlib.NewWriter(&buf)
	default:
		return body, nil
	}
	if _, err := w.Write(body); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return buf.Bytes(), nil
}
