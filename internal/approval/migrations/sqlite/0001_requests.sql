-- Requests, one row each. body is the whole request as JSON; the other
-- columns copy what queries select and order by. Times are Unix
-- microseconds (UTC). seq orders changes for readers in other processes:
-- every write sets it to the highest value plus one, and SQLite serializes
-- writers, so readers see seq grow without gaps.
CREATE TABLE requests (
	id            TEXT    PRIMARY KEY,
	state         TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'withdrawn', 'consumed')),
	hash          TEXT    NOT NULL,
	requester_iss TEXT    NOT NULL,
	requester_sub TEXT    NOT NULL,
	resource      TEXT    NOT NULL,
	kind          TEXT    NOT NULL,
	holder        TEXT    NOT NULL,
	created_at    INTEGER NOT NULL,
	expires_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL,
	version       INTEGER NOT NULL,
	seq           INTEGER NOT NULL,
	body          TEXT    NOT NULL
) STRICT;

CREATE INDEX requests_by_state ON requests (state, created_at);
CREATE INDEX requests_by_created ON requests (created_at);
CREATE INDEX requests_live_by_expiry ON requests (expires_at) WHERE state IN ('pending', 'approved');
CREATE UNIQUE INDEX requests_by_seq ON requests (seq);

-- Terminal requests never change, and an approval may only be used, expire
-- or be withdrawn: whatever the application does, the database refuses to
-- revive a decided request.
CREATE TRIGGER requests_terminal_never_change
BEFORE UPDATE ON requests
WHEN OLD.state IN ('denied', 'expired', 'withdrawn', 'consumed')
  OR (OLD.state = 'approved' AND NEW.state NOT IN ('consumed', 'expired', 'withdrawn'))
  OR NEW.version <> OLD.version + 1
  OR NEW.id <> OLD.id
BEGIN
	SELECT RAISE(ABORT, 'approval: a decided request cannot change that way');
END;
