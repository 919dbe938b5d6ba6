#!/usr/bin/env bash
# Runs once, when the postgres service initialises its data directory
# (docker-entrypoint-initdb.d): the gateway role custos logs in as, with
# the password stackinit generated, and the demo cardholder data. The PANs
# are the card brands' public test numbers.
set -euo pipefail

gateway_password="$(cat "${GATEWAY_PASSWORD_FILE:?}")"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v gateway_password="$gateway_password" <<'SQL'
CREATE ROLE custos_gateway LOGIN PASSWORD :'gateway_password';

CREATE TABLE cards (
  id     serial PRIMARY KEY,
  holder text NOT NULL,
  pan    text NOT NULL,
  cvv    text NOT NULL,
  exp    text NOT NULL
);
CREATE TABLE customers (
  id      serial PRIMARY KEY,
  name    text NOT NULL,
  email   text NOT NULL,
  card_id integer REFERENCES cards(id),
  note    text
);
INSERT INTO cards (holder, pan, cvv, exp) VALUES
  ('Ada Lovelace',    '4242424242424242', '123',  '12/30'),
  ('Alan Turing',     '5555555555554444', '456',  '01/29'),
  ('Grace Hopper',    '378282246310005',  '7890', '06/28'),
  ('Edsger Dijkstra', '6011111111111117', '321',  '09/31'),
  ('Barbara Liskov',  '3056930009020004', '654',  '03/27');
INSERT INTO customers (name, email, card_id, note)
SELECT c.holder, lower(replace(c.holder, ' ', '.')) || '@example.com', c.id,
       CASE WHEN c.id = 1 THEN 'called support, read card 4242 4242 4242 4242 aloud' END
FROM cards c;

GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO custos_gateway;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO custos_gateway;
SQL
