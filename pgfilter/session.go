package pgfilter

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
)

// Session is one authenticated client connection and what it is bound to.
// Hooks receive it; it does not change after authentication.
type Session struct {
	// ID identifies the session in logs and audit records.
	ID string
	// Principal is the verified token's identity.
	Principal *authn.Principal
	// Resource is the upstream the session is connected to.
	Resource *config.Resource
	// ClientAddr is the client's address as seen by custos.
	ClientAddr string
	// Params are the startup parameters passed upstream.
	Params map[string]string
	// TLS reports whether the client connection is encrypted.
	TLS bool
	// Started is when authentication completed.
	Started time.Time
	// Login is the resource's group login the session uses upstream; nil
	// when the resource has none (the gateway's own login).
	Login *config.UpstreamLogin
	// ProvisionedUser is the principal's own PostgreSQL user, for a login
	// with PerPrincipal.
	ProvisionedUser string
}

// UpstreamUser is the PostgreSQL role the session logs in as.
func (s *Session) UpstreamUser() string {
	if s.ProvisionedUser != "" {
		return s.ProvisionedUser
	}
	if s.Login != nil {
		return s.Login.User
	}
	return s.Resource.User
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
