package approval

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeRequest feeds stored bodies to the decoder both stores use: it
// never panics, accepts only requests of the row's id in a known state,
// and what it accepts encodes back to an equal request.
func FuzzDecodeRequest(f *testing.F) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := Request{
		ID: "apr_seed", Hash: "h", Requester: agent, Resource: "payments-db", Kind: KindSQL,
		Summary: "UPDATE cards SET holder = $1", ApproverGroups: []string{"dba"}, Quorum: 2,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), State: StateApproved, UpdatedAt: now, Version: 3,
		Approvals: []Vote{{By: bob, At: now, Reason: "ok"}}, Denial: &Vote{By: carol, At: now},
	}
	body, err := json.Marshal(r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("apr_seed", int64(3), body)
	f.Add("apr_seed", int64(1), []byte(`{"id":"apr_seed","hash":"h","state":"pending"}`))
	f.Add("apr_x", int64(1), []byte(`{"id":"apr_seed","hash":"h","state":"pending"}`))
	f.Add("apr_seed", int64(1), []byte(`{"id":"apr_seed","hash":"h","state":"revived"}`))
	f.Add("apr_seed", int64(1), []byte(`{"id":"apr_seed","created_at":"yesterday"}`))
	f.Add("apr_seed", int64(1), []byte(`null`))
	f.Fuzz(func(t *testing.T, id string, version int64, body []byte) {
		got, err := decodeRequest(id, version, body)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if got.ID != id || !got.State.Valid() || got.Hash == "" || got.Version != version {
			t.Fatalf("accepted %+v for id %q version %d", got, id, version)
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeRequest(id, version, again)
		if err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		if !reflect.DeepEqual(normalized(got), normalized(back)) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", got, back)
		}
		if !reflect.DeepEqual(got.Clone(), got) {
			t.Fatal("Clone differs from the original")
		}
	})
}

// normalized drops what JSON cannot round trip exactly: time locations,
// empty slices against nil ones.
func normalized(r *Request) *Request {
	c := r.Clone()
	for _, s := range []*[]string{&c.Flags, &c.Reasons, &c.ApproverGroups, &c.Requester.Groups} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	if len(c.Approvals) == 0 {
		c.Approvals = nil
	}
	c.CreatedAt, c.ExpiresAt, c.UpdatedAt = c.CreatedAt.UTC(), c.ExpiresAt.UTC(), c.UpdatedAt.UTC()
	for i := range c.Approvals {
		c.Approvals[i].At = c.Approvals[i].At.UTC()
		if len(c.Approvals[i].By.Groups) == 0 {
			c.Approvals[i].By.Groups = nil
		}
	}
	if c.Denial != nil {
		c.Denial.At = c.Denial.At.UTC()
		if len(c.Denial.By.Groups) == 0 {
			c.Denial.By.Groups = nil
		}
	}
	return c
}
