package approvalapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/custos-dev/custos/internal/approval"
)

// Client calls the JSON API. The zero HTTPClient is http.DefaultClient.
type Client struct {
	// BaseURL is the admin listener's URL ("http://127.0.0.1:9090"); the
	// API is under APIPath below it.
	BaseURL string
	// Token is the caller's OIDC token, sent as a bearer token.
	Token      string
	HTTPClient *http.Client
}

// ListOptions select requests for Client.List.
type ListOptions struct {
	// State is an approval state or StateAll; "" is pending.
	State string
	// Limit caps the result; 0 is the server's default.
	Limit int
}

// APIError is an error answered by the API.
type APIError struct {
	Status  int    // HTTP status
	Code    string // ErrorResponse.Code
	Message string // ErrorResponse.Error
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s (%d %s)", msg, e.Status, e.Code)
	}
	return fmt.Sprintf("%s (%d)", msg, e.Status)
}

// Unwrap returns the approval error the code stands for, so that
// errors.Is(err, approval.ErrSelfApproval) works on the client side too.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case "not_found":
		return approval.ErrNotFound
	case "self_approval":
		return approval.ErrSelfApproval
	case "not_approver":
		return approval.ErrNotApprover
	case "already_voted":
		return approval.ErrAlreadyVoted
	case "expired":
		return approval.ErrExpired
	case "not_pending":
		return approval.ErrNotPending
	case "invalid", "reason_required":
		return approval.ErrInvalid
	}
	return nil
}

// List returns the requests opts select that the caller may see, newest
// first.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]approval.Request, error) {
	q := url.Values{}
	if opts.State != "" {
		q.Set("state", opts.State)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	path := APIPath
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out ListResponse
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	if out.Approvals == nil {
		out.Approvals = []approval.Request{}
	}
	return out.Approvals, nil
}

// Get returns request id.
func (c *Client) Get(ctx context.Context, id string) (*approval.Request, error) {
	var out approval.Request
	if err := c.do(ctx, http.MethodGet, APIPath+"/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Approve records the caller's approval of request id and returns the
// request as committed.
func (c *Client) Approve(ctx context.Context, id, reason string) (*approval.Request, error) {
	var out approval.Request
	if err := c.do(ctx, http.MethodPost, APIPath+"/"+url.PathEscape(id)+"/approve", DecideRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deny denies request id; reason is required.
func (c *Client) Deny(ctx context.Context, id, reason string) (*approval.Request, error) {
	var out approval.Request
	if err := c.do(ctx, http.MethodPost, APIPath+"/"+url.PathEscape(id)+"/deny", DecideRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		return errors.New("approvals client: no base URL")
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("approvals client: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return fmt.Errorf("approvals client: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("approvals client: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("approvals client: read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		apiErr := &APIError{Status: resp.StatusCode}
		var e ErrorResponse
		if json.Unmarshal(b, &e) == nil && (e.Error != "" || e.Code != "") {
			apiErr.Code, apiErr.Message = e.Code, e.Error
		} else {
			apiErr.Message = strings.TrimSpace(string(b[:min(len(b), 200)]))
		}
		return apiErr
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("approvals client: decode %s %s: %w", method, path, err)
	}
	return nil
}
