package authn

import "testing"

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header, tok string
		ok          bool
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer  abc ", "abc", true},
		{"  BEARER abc", "abc", true},
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"Basic YWxpY2U6c2VjcmV0", "", false},
		{"", "", false},
	} {
		if tok, ok := BearerToken(tc.header); tok != tc.tok || ok != tc.ok {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tc.header, tok, ok, tc.tok, tc.ok)
		}
	}
}
