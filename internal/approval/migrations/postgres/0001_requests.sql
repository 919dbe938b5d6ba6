-- Requests, one row each. body is the whole request as JSON (json, not
-- jsonb: kept byte for byte); the other columns copy what queries select
-- and order by.
CREATE TABLE custos_approval.requests (
	id            text        PRIMARY KEY,
	state         text        NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'withdrawn', 'consumed')),
	hash          text        NOT NULL,
	requester_iss text        NOT NULL,
	requester_sub text        NOT NULL,
	resource      text        NOT NULL,
	kind          text        NOT NULL,
	holder        text        NOT NULL,
	created_at    timestamptz NOT NULL,
	expires_at    timestamptz NOT NULL,
	updated_at    timestamptz NOT NULL,
	version       bigint      NOT NULL,
	body          json        NOT NULL
);

CREATE INDEX requests_by_state ON custos_approval.requests (state, created_at);
CREATE INDEX requests_by_created ON custos_approval.requests (created_at);
CREATE INDEX requests_live_by_expiry ON custos_approval.requests (expires_at) WHERE state IN ('pending', 'approved');

-- Terminal requests never change, and an approval may only be used, expire
-- or be withdrawn: whatever the application does, the database refuses to
-- revive a decided request.
CREATE FUNCTION custos_approval.refuse_terminal_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.state IN ('denied', 'expired', 'withdrawn', 'consumed')
	   OR (OLD.state = 'approved' AND NEW.state NOT IN ('consumed', 'expired', 'withdrawn'))
	   OR NEW.version <> OLD.version + 1
	   OR NEW.id <> OLD.id THEN
		RAISE EXCEPTION 'approval: request % cannot go from % to %', OLD.id, OLD.state, NEW.state
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER requests_terminal_never_change
BEFORE UPDATE ON custos_approval.requests
FOR EACH ROW EXECUTE FUNCTION custos_approval.refuse_terminal_change();

-- Every committed insert or update wakes the other replicas: they LISTEN on
-- custos_approval and re-read the request named in the payload.
CREATE FUNCTION custos_approval.notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('custos_approval', NEW.id);
	RETURN NULL;
END
$$;

CREATE TRIGGER requests_notify
AFTER INSERT OR UPDATE ON custos_approval.requests
FOR EACH ROW EXECUTE FUNCTION custos_approval.notify_change();
