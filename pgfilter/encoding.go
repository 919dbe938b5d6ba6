package pgfilter

import (
	"errors"
	"fmt"
	"strings"
)

// custos classifies a statement as the bytes the client sent. That is only
// what the server parses when every byte below 0x80 in the session's client
// encoding is the ASCII character it looks like: then quotes, backslashes
// and semicolons mean the same to custos and to the server, whatever the
// multibyte characters around them. PostgreSQL's server encodings all have
// that property; its client-only encodings (SJIS, BIG5, GBK, UHC, GB18030,
// JOHAB, SHIFT_JIS_2004) do not: a multibyte character may end in 0x5C or
// 0x27, so E'<0x81>\'; DROP ...' is one string to custos and two
// statements to the server. custos therefore pins each session to a safe
// encoding: it checks the client's client_encoding at startup, always
// sends one upstream, checks what the server reports after login and
// during the session, and refuses SQL that would change it.

// defaultClientEncoding is sent upstream when the client names none, so
// that a role's or database's default (ALTER ROLE ... SET client_encoding)
// never decides the session's encoding.
const defaultClientEncoding = "UTF8"

// maxEncodingName mirrors PostgreSQL's NAMEDATALEN: pg_char_to_encoding
// refuses a name of that length or longer.
const maxEncodingName = 64

// encodingAliases maps PostgreSQL's cleaned encoding names (lower-case
// ASCII letters and digits only; src/common/encnames.c, pg_encname_tbl) to
// the encoding's canonical name (pg_enc2name_tbl).
var encodingAliases = map[string]string{
	"abc":          "WIN1258",
	"alt":          "WIN866",
	"big5":         "BIG5",
	"euccn":        "EUC_CN",
	"eucjis2004":   "EUC_JIS_2004",
	"eucjp":        "EUC_JP",
	"euckr":        "EUC_KR",
	"euctw":        "EUC_TW",
	"gb18030":      "GB18030",
	"gbk":          "GBK",
	"iso88591":     "LATIN1",
	"iso885910":    "LATIN6",
	"iso885913":    "LATIN7",
	"iso885914":    "LATIN8",
	"iso885915":    "LATIN9",
	"iso885916":    "LATIN10",
	"iso88592":     "LATIN2",
	"iso88593":     "LATIN3",
	"iso88594":     "LATIN4",
	"iso88595":     "ISO_8859_5",
	"iso88596":     "ISO_8859_6",
	"iso88597":     "ISO_8859_7",
	"iso88598":     "ISO_8859_8",
	"iso88599":     "LATIN5",
	"johab":        "JOHAB",
	"koi8":         "KOI8R",
	"koi8r":        "KOI8R",
	"koi8u":        "KOI8U",
	"latin1":       "LATIN1",
	"latin10":      "LATIN10",
	"latin2":       "LATIN2",
	"latin3":       "LATIN3",
	"latin4":       "LATIN4",
	"latin5":       "LATIN5",
	"latin6":       "LATIN6",
	"latin7":       "LATIN7",
	"latin8":       "LATIN8",
	"latin9":       "LATIN9",
	"mskanji":      "SJIS",
	"muleinternal": "MULE_INTERNAL",
	"shiftjis":     "SJIS",
	"shiftjis2004": "SHIFT_JIS_2004",
	"sjis":         "SJIS",
	"sqlascii":     "SQL_ASCII",
	"tcvn":         "WIN1258",
	"tcvn5712":     "WIN1258",
	"uhc":          "UHC",
	"unicode":      "UTF8",
	"utf8":         "UTF8",
	"vscii":        "WIN1258",
	"win":          "WIN1251",
	"win1250":      "WIN1250",
	"win1251":      "WIN1251",
	"win1252":      "WIN1252",
	"win1253":      "WIN1253",
	"win1254":      "WIN1254",
	"win1255":      "WIN1255",
	"win1256":      "WIN1256",
	"win1257":      "WIN1257",
	"win1258":      "WIN1258",
	"win866":       "WIN866",
	"win874":       "WIN874",
	"win932":       "SJIS",
	"win936":       "GBK",
	"win949":       "UHC",
	"win950":       "BIG5",
	"windows1250":  "WIN1250",
	"windows1251":  "WIN1251",
	"windows1252":  "WIN1252",
	"windows1253":  "WIN1253",
	"windows1254":  "WIN1254",
	"windows1255":  "WIN1255",
	"windows1256":  "WIN1256",
	"windows1257":  "WIN1257",
	"windows1258":  "WIN1258",
	"windows866":   "WIN866",
	"windows874":   "WIN874",
	"windows932":   "SJIS",
	"windows936":   "GBK",
	"windows949":   "UHC",
	"windows950":   "BIG5",
}

// safeEncodings are the canonical names of PostgreSQL's server encodings
// (PG_VALID_BE_ENCODING), in PostgreSQL's order: in each, a byte below 0x80
// is always the ASCII character.
var safeEncodings = []string{
	"SQL_ASCII", "EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", "UTF8", "MULE_INTERNAL",
	"LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7", "LATIN8", "LATIN9", "LATIN10",
	"WIN1256", "WIN1258", "WIN866", "WIN874", "KOI8R", "WIN1251", "WIN1252",
	"ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8",
	"WIN1250", "WIN1253", "WIN1254", "WIN1255", "WIN1257", "KOI8U",
}

var safeEncodingSet = func() map[string]bool {
	m := make(map[string]bool, len(safeEncodings))
	for _, e := range safeEncodings {
		m[e] = true
	}
	return m
}()

// canonicalEncoding resolves an encoding name the way PostgreSQL's
// pg_char_to_encoding does (case and non-alphanumeric characters ignored,
// aliases followed) and returns the canonical name. ok is false for a name
// PostgreSQL does not know, for a NUL, and for any name holding a byte of
// 0x80 or above: the server decides whether such a byte is alphanumeric by its
// locale, so custos cannot know what it resolves to.
func canonicalEncoding(name string) (canon string, ok bool) {
	if name == "" || len(name) >= maxEncodingName {
		return "", false
	}
	key := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 0x80, c == 0: // a C string would end at NUL
			return "", false
		case c >= 'A' && c <= 'Z':
			key = append(key, c+'a'-'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			key = append(key, c)
		}
	}
	canon, ok = encodingAliases[string(key)]
	return canon, ok
}

// safeClientEncoding returns the canonical name of a client encoding
// custos can classify statements in, or an error saying why name is not
// one.
func safeClientEncoding(name string) (string, error) {
	canon, ok := canonicalEncoding(name)
	if !ok {
		return "", fmt.Errorf("%w: %q is not an encoding custos accepts", ErrUnsafeEncoding, name)
	}
	if !safeEncodingSet[canon] {
		return "", fmt.Errorf("%w: %s can hide quotes and backslashes inside multibyte characters", ErrUnsafeEncoding, canon)
	}
	return canon, nil
}

// ErrUnsafeEncoding is a client encoding custos refuses.
var ErrUnsafeEncoding = errors.New("unsafe client encoding")

// unsafeEncodingError is the FATAL a client gets for a refused encoding.
func unsafeEncodingError(err error) error {
	return fatalHint("22023", "custos: "+err.Error(),
		"Use one of "+strings.Join(safeEncodings, ", ")+" (UTF8 is the default).")
}

// checkReportedEncoding checks the client_encoding a server reported
// (ParameterStatus) for a session pinned to want: it must be a safe
// encoding, and the pinned one.
func checkReportedEncoding(reported, want string) error {
	canon, err := safeClientEncoding(reported)
	if err != nil {
		return err
	}
	if want != "" && canon != want {
		return fmt.Errorf("%w: the server reports %s, custos pinned %s", ErrUnsafeEncoding, canon, want)
	}
	return nil
}

// checkParameterStatus ends the session when the server reports that the
// client encoding changed to one custos cannot classify in: whatever got
// the change past custos, the statements that follow would be read
// differently by the server.
func (ss *session) checkParameterStatus(body []byte) error {
	name, rest, ok := cstring(body)
	if !ok || name != "client_encoding" {
		return nil
	}
	value, _, ok := cstring(rest)
	if !ok {
		return fmt.Errorf("%w: ParameterStatus client_encoding without a value", ErrMalformed)
	}
	if err := checkReportedEncoding(value, ""); err != nil {
		ss.srv.metrics.connections.WithLabelValues("unsafe_encoding").Inc()
		ss.log.Error("session ended", "reason", "unsafe_encoding", "client_encoding", value, "error", err)
		return unsafeEncodingError(fmt.Errorf("the session's client encoding changed: %w", err))
	}
	return nil
}
