package approval

import (
	"slices"
	"testing"

	"github.com/custos-dev/custos/internal/authn"
)

func TestPrincipalOf(t *testing.T) {
	t.Parallel()
	groups := []string{"agents"}
	p := PrincipalOf(&authn.Principal{Subject: "agent-7", Issuer: "https://issuer.example", Groups: groups, Act: &authn.Actor{Subject: "alice@example.com"}})
	if p.Sub != "agent-7" || p.Iss != "https://issuer.example" || !slices.Equal(p.Groups, groups) || p.Act != "alice@example.com" {
		t.Fatalf("PrincipalOf = %+v", p)
	}
	groups[0] = "dba"
	if p.Groups[0] != "agents" {
		t.Fatal("the groups are shared with the token's")
	}
	if p := PrincipalOf(&authn.Principal{Subject: "bob", Issuer: "i"}); p.Act != "" {
		t.Fatalf("no act claim gave Act %q", p.Act)
	}
}
