package approvalapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
)

// ListResponse is the body of GET APIPath.
type ListResponse struct {
	Approvals []approval.Request `json:"approvals"`
}

// DecideRequest is the body of POST APIPath/{id}/approve and /deny.
type DecideRequest struct {
	Reason string `json:"reason"`
}

// ErrorResponse is the body of every API error.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// StateAll selects requests of every state in a list.
const StateAll = "all"

// apiAuth returns the caller's identity, or writes the 401 (or 503 when
// the issuer is unreachable) and returns false.
func (h *handler) apiAuth(w http.ResponseWriter, r *http.Request) (approval.Principal, bool) {
	raw, ok := authn.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		h.log.Info("approvals api: no bearer token", slog.String("client_address", r.RemoteAddr))
		writeUnauthorized(w, "a bearer token is required (Authorization: Bearer <token>)")
		return approval.Principal{}, false
	}
	p, err := h.v.Verify(r.Context(), raw)
	if err != nil {
		reason := authn.Reason(err)
		h.log.Info("approvals api: token refused", slog.String("reason", reason), slog.String("client_address", r.RemoteAddr))
		if reason == "issuer_unavailable" {
			writeJSON(w, http.StatusServiceUnavailable, ErrorResponse{Error: authMessage(err), Code: "issuer_unavailable"})
			return approval.Principal{}, false
		}
		writeUnauthorized(w, authMessage(err))
		return approval.Principal{}, false
	}
	return approval.PrincipalOf(p), true
}

func writeUnauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="custos", error="invalid_token", error_description="`+msg+`"`)
	writeJSON(w, http.StatusUnauthorized, ErrorResponse{Error: msg, Code: "invalid_token"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (h *handler) apiError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorStatus(err)
	if status >= 500 {
		h.log.Error("approvals api: call failed", slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	writeJSON(w, status, ErrorResponse{Error: h.errorMessage(err), Code: code})
}

func (h *handler) apiList(w http.ResponseWriter, r *http.Request) {
	p, ok := h.apiAuth(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	state, err := parseState(q.Get("state"))
	if err != nil {
		h.apiError(w, r, err)
		return
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit <= 0 {
			h.apiError(w, r, errBadLimit)
			return
		}
	}
	list, err := h.list(r.Context(), p, state, limit)
	if err != nil {
		h.apiError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ListResponse{Approvals: list})
}

// parseState reads the state parameter: "" is pending, "all" is every
// state.
func parseState(s string) (approval.State, error) {
	switch s {
	case "":
		return approval.StatePending, nil
	case StateAll:
		return "", nil
	}
	if st := approval.State(s); st.Valid() {
		return st, nil
	}
	return "", errBadState
}

func (h *handler) apiGet(w http.ResponseWriter, r *http.Request) {
	p, ok := h.apiAuth(w, r)
	if !ok {
		return
	}
	req, err := h.get(r.Context(), p, r.PathValue("id"))
	if err != nil {
		h.apiError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *handler) apiDecide(w http.ResponseWriter, r *http.Request) {
	p, ok := h.apiAuth(w, r)
	if !ok {
		return
	}
	var body DecideRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		h.apiError(w, r, errBadBody)
		return
	}
	req, err := h.decide(r.Context(), p, r.PathValue("id"), verbOf(r), body.Reason)
	if err != nil {
		h.apiError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *handler) apiNotFound(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, ErrorResponse{Error: "no such API path", Code: "not_found"})
}
