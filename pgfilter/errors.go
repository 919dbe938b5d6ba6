package pgfilter

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// clientError is an error destined for the client as an ErrorResponse.
type clientError struct {
	resp *pgproto3.ErrorResponse
}

// ClientError wraps an ErrorResponse as an error: a hook returning it (or
// an error wrapping it) ends the session with exactly that response.
func ClientError(resp *pgproto3.ErrorResponse) error { return &clientError{resp: resp} }

func (e *clientError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.resp.Severity, e.resp.Code, e.resp.Message)
}

func fatal(code, msg string) error {
	return &clientError{resp: &pgproto3.ErrorResponse{
		Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg,
	}}
}

func fatalHint(code, msg, hint string) error {
	return &clientError{resp: &pgproto3.ErrorResponse{
		Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg, Hint: hint,
	}}
}

var (
	errShutdown = fatal("57P01", "terminating connection: custos is shutting down")
	errIdle     = fatal("57P05", "terminating connection due to idle-session timeout")
)

// errorResponseFor turns err into the ErrorResponse the client should see.
func errorResponseFor(err error) *pgproto3.ErrorResponse {
	var ce *clientError
	if errors.As(err, &ce) {
		return ce.resp
	}
	return &pgproto3.ErrorResponse{
		Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "XX000",
		Message: "custos: internal error",
	}
}
