"""A million events in PostgreSQL, for bench/million/run.py.

    python -m bench.million.generate [--events 1000000] [--revision head]

Recreates the database relay_bench_million (--url to use another), migrates it with Relay's
own Alembic migrations (to --revision: 0007 gives the schema before issue 11's indexes) and
fills it inside PostgreSQL (INSERT … SELECT over generate_series; no row crosses the wire):

- events: received over the 90 days before now, ids in order of arrival. Types as SparkLoop
  sends them (schemas.events.EVENTS, plus 0.3% of types Relay has no spec for: unhandled);
  statuses mostly done, 2.5% failed, 0.5% invalid, the last two minutes received or
  processing, and 1% of the last hour's events processing (a delivery waiting for a retry).
  Payloads are the documented shapes (sandbox/fixtures/sparkloop/) with 400,000 subscribers
  and the guessed shapes of the undocumented types; plain JSON (no RELAY_PAYLOAD_KEYS), the
  de-duplication keys as the intake makes them (type:hash, raw:hash for invalid and unhandled
  events). 1% came from `relay backfill` (source backfill, catch-up lane).
- deliveries: one per destination of the event's spec (sprig, and spruce where it has one),
  none for invalid and unhandled events. Succeeded (sprig sometimes superseded), 3% after a
  resolved 429/503; a failed event has one failed delivery with a vendor error as
  workers.vendor_errors writes them; received events' deliveries pending and published, a
  processing event's delivery in flight under a lease or pending for a retry.
- delivery_attempts: one per run of each delivery that ran (a retried one's earlier runs
  retried with a 503), Spruce's with its rate headers; audit_entries: 20,000 operator actions.
- event_subjects: derived from the stored payloads in SQL by relay.subjects' rules (digests
  without RELAY_LOOKUP_KEY: plain SHA-256), checked against relay.subjects.subject_rows for a
  sample of events.

Values are pseudo-random but deterministic (hashes of the row number), so two runs with the
same --events build the same rows, relative to the time they run. The migration's indexes and
constraints are dropped during the load and rebuilt from their own definitions afterwards
(faster than maintaining them row by row), then VACUUM ANALYZE, as autovacuum would.
"""
from __future__ import annotations

import argparse
import random
import re
import time

import sqlalchemy as sa

from relay.db import Database
from relay.models import utcnow
from relay.subjects import subject_rows
from schemas.events import EVENTS

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/relay_bench_million"
TABLES = ("events", "deliveries", "event_subjects", "delivery_attempts", "audit_entries")
SUBSCRIBERS = 400_000
AUDIT_ENTRIES = 20_000
SAMPLE = 2_000

# Share of events per type (cumulative thresholds below); the rest are types without a spec.
TYPE_SHARES = {
    "new_referral": 0.35, "reward_unlocked": 0.30, "reward_redeemed": 0.08, "sync_subscriber": 0.12,
    "new_partner_referral": 0.06, "new_partner_pending_referral": 0.05, "new_offer_lead": 0.037,
}
UNHANDLED_TYPES = ("partner_referral_rejected", "subscriber_unsubscribed")

FUNCTIONS = r"""
-- u(n, salt): a uniform number in [0, 1), the same for the same n and salt.
CREATE FUNCTION pg_temp.u(n bigint, salt bigint) RETURNS float8 LANGUAGE sql STABLE AS
$$ SELECT (hashint8extended(n, salt) & 2147483647)::float8 / 2147483648 $$;

CREATE FUNCTION pg_temp.pick(options text[], x float8) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT options[1 + floor(x * array_length(options, 1))::int] $$;

CREATE FUNCTION pg_temp.first_name(s bigint) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT pg_temp.pick(ARRAY['John','Ann','Maria','Li','Omar','Sofia','Lukas','Aiko','Priya','Mateo',
  'Chloe','Noah','Fatima','Ivan','Grace','Kwame','Elena','Sam','Yara','Tom'], pg_temp.u(s, 101)) $$;

CREATE FUNCTION pg_temp.last_name(s bigint) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT pg_temp.pick(ARRAY['Doe','Smith','Garcia','Chen','Haddad','Rossi','Müller','Tanaka','Patel','Silva',
  'Martin','Brown','Khan','Petrov','Okafor','Nguyen','Novak','Lee','Costa','Berg'], pg_temp.u(s, 102)) $$;

-- As the subscriber typed it: 3% with capitals or a stray space (relay.subjects normalises).
CREATE FUNCTION pg_temp.email(s bigint) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT CASE WHEN pg_temp.u(s, 104) < 0.03 THEN ' ' || pg_temp.first_name(s) || '.' || pg_temp.last_name(s) ELSE
  lower(pg_temp.first_name(s) || '.' || pg_temp.last_name(s)) END || s || '@'
  || pg_temp.pick(ARRAY['example.com','example.org','mail.example.net','example.co.uk'], pg_temp.u(s, 103)) $$;

CREATE FUNCTION pg_temp.sub_id(s bigint) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT 'sub_' || substr(md5('sub' || s), 1, 8) $$;

-- A subscriber of the referral program, as the documented payloads carry one.
CREATE FUNCTION pg_temp.person(s bigint, referrals int) RETURNS jsonb LANGUAGE sql STABLE AS
$$ SELECT jsonb_build_object(
  'id', pg_temp.sub_id(s), 'first_name', pg_temp.first_name(s),
  'name', pg_temp.first_name(s) || ' ' || pg_temp.last_name(s), 'email', pg_temp.email(s),
  'referral_code', substr(md5('rc' || s), 1, 8),
  'referral_link', 'https://mywebsite.com?rh_ref=' || substr(md5('rc' || s), 1, 8),
  'referred', pg_temp.u(s, 105) < 0.6, 'tot_referrals', referrals, 'next_reward', 1 + (s % 5),
  'created_at', 1564400550 + s * 53) $$;

-- A person in an undocumented payload (schemas.sparkloop.LooseContactSchema).
CREATE FUNCTION pg_temp.loose(s bigint, status text) RETURNS jsonb LANGUAGE sql STABLE AS
$$ SELECT jsonb_strip_nulls(jsonb_build_object(
  'id', CASE WHEN pg_temp.u(s, 106) < 0.8 THEN pg_temp.sub_id(s) END, 'email', pg_temp.email(s),
  'name', pg_temp.first_name(s) || ' ' || pg_temp.last_name(s), 'referral_status', status)) $$;

CREATE FUNCTION pg_temp.reward(s bigint, k int) RETURNS jsonb LANGUAGE sql STABLE AS
$$ SELECT jsonb_build_object('id', 'reward_' || substr(md5('reward' || k), 1, 10),
  'name', pg_temp.pick(ARRAY['2018 Private Report: State of the Ecommerce','Sticker pack','T-Shirt',
    'Annual membership','Founders'' call'], k / 5.0), 'referrals', 1 + k * 2, 'recurring', k = 4) $$;

-- One vendor error as workers.vendor_errors.VendorError words it, picked by x; a request id
-- when the vendor answered.
CREATE FUNCTION pg_temp.vendor_error(destination text, x float8, n bigint) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT m || CASE WHEN m NOT LIKE '%network error%' AND x < 0.9 THEN ' [req ' || substr(md5('req' || n), 1, 16) || ']'
  ELSE '' END FROM (SELECT CASE destination
  WHEN 'spruce' THEN pg_temp.pick(ARRAY[
    'spruce POST /contacts -> 400 invalid_request: emailAddresses[0] is not a valid email address',
    'spruce POST /contacts -> 400 invalid_request: givenName must not be empty',
    'spruce POST /conversations/{conversationId}/messages -> 422 unprocessable: message body too long',
    'spruce POST /contacts/search -> 503: Service Unavailable',
    'spruce GET /contacts/{contactId}/conversations -> 404 not_found: contact not found',
    'spruce POST /conversations -> network error: ReadTimeout'], x)
  ELSE pg_temp.pick(ARRAY[
    'sprig PUT /v2/users/{userId} -> 400: attribute value too long',
    'sprig PUT /v2/users/{userId} -> 400: invalid email',
    'sprig PUT /v2/users/{userId} -> 500: Internal Server Error',
    'sprig PUT /v2/users/{userId} -> network error: ConnectError'], x)
  END AS m) chosen $$;

-- What a delivery met before it succeeded, or meets while it waits for a retry.
CREATE FUNCTION pg_temp.transient_error(destination text, n bigint) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT CASE destination WHEN 'sprig' THEN 'sprig PUT /v2/users/{userId} -> 429: Too Many Requests [req '
  ELSE 'spruce POST /contacts/search -> 503: Service Unavailable [req ' END || substr(md5('req' || n), 1, 16) || ']' $$;
"""

# One row per event with the choices every table needs.
PLAN = r"""
CREATE TEMP TABLE plan AS
SELECT i, received_at, event_type, s, r, k,
       CASE WHEN event_type = ANY(:unhandled) THEN 'unhandled'
            WHEN pg_temp.u(i, 3) < 0.005 THEN 'invalid'
            WHEN received_at > CAST(:now AS timestamptz) - interval '2 minutes'
                 THEN CASE WHEN pg_temp.u(i, 4) < 0.5 THEN 'received' ELSE 'processing' END
            WHEN received_at > CAST(:now AS timestamptz) - interval '1 hour' AND pg_temp.u(i, 4) < 0.01 THEN 'processing'
            WHEN pg_temp.u(i, 5) < 0.025 THEN 'failed'
            ELSE 'done' END AS status,
       CASE WHEN pg_temp.u(i, 6) < 0.01 THEN 'backfill' ELSE 'webhook' END AS source,
       event_type IN ('new_referral', 'new_partner_referral', 'reward_unlocked', 'reward_redeemed') AS to_spruce
FROM (
  SELECT i,
         CAST(:now AS timestamptz) - interval '90 days' + (i - 1 + pg_temp.u(i, 2)) * (interval '90 days' / CAST(:events AS float8))
           AS received_at,
         CASE {type_case} END AS event_type,
         1 + (hashint8extended(i, 10) & 2147483647) % CAST(:subscribers AS bigint) AS s,
         1 + (hashint8extended(i, 11) & 2147483647) % CAST(:subscribers AS bigint) AS r,
         floor(pg_temp.u(i, 12) * 5)::int AS k
  FROM generate_series(1, CAST(:events AS bigint)) AS i
) chosen
"""

EVENTS_INSERT = r"""
INSERT INTO events (id, type, status, dedup_key, payload, errors, source, received_at, updated_at)
SELECT i, event_type, status,
       CASE WHEN status IN ('invalid', 'unhandled') THEN 'raw:' ELSE event_type || ':' END
         || encode(sha256(convert_to('bench-event:' || i, 'UTF8')), 'hex'),
       CASE WHEN status = 'invalid' THEN
              CASE WHEN payload ? 'subscriber' AND jsonb_typeof(payload->'subscriber'->'tot_referrals') = 'number'
                   THEN payload #- '{subscriber,email}' ELSE payload || '{"campaign": "MF6319db9890"}' END
            ELSE payload END,
       CASE WHEN status <> 'invalid' THEN 'null'::jsonb
            WHEN payload ? 'subscriber' AND jsonb_typeof(payload->'subscriber'->'tot_referrals') = 'number'
              THEN '{"subscriber": {"email": ["Missing data for required field."]}}'
            ELSE '{"campaign": {"_schema": ["Invalid input type."]}}' END,
       source, received_at,
       received_at + CASE WHEN status IN ('done', 'failed') THEN interval '1 second' * (0.3 + 4 * pg_temp.u(i, 7))
                          ELSE interval '0' END
FROM (
  SELECT plan.*, CASE event_type
    WHEN 'new_referral' THEN jsonb_build_object('type', event_type, 'campaign_id', 'MF6319db9890',
      'subscriber', pg_temp.person(s, 0), 'referrer', pg_temp.person(r, 1 + k))
    WHEN 'reward_unlocked' THEN jsonb_build_object('type', event_type, 'campaign_id', 'MF6319db9890',
      'subscriber', pg_temp.person(s, 1 + k * 2), 'reward', pg_temp.reward(s, k))
      || CASE WHEN pg_temp.u(i, 13) < 0.8 THEN jsonb_build_object('referrals', 1 + k * 2,
           'coupon_code', substr(md5('coupon' || i), 1, 7)) ELSE '{}' END  -- else the legacy shape
    WHEN 'reward_redeemed' THEN jsonb_build_object('type', event_type, 'campaign_id', 'MF6319db9890',
      'referrals', 1 + k * 2, 'coupon_code', substr(md5('coupon' || i), 1, 7),
      'subscriber', pg_temp.person(s, 1 + k * 2), 'reward', pg_temp.reward(s, k),
      'reward_variant_name', 'T-Shirt ' || pg_temp.pick(ARRAY['S','M','L','XL','XXL'], pg_temp.u(i, 14)),
      'reward_variant_sku', 't_shirt_' || lower(pg_temp.pick(ARRAY['S','M','L','XL','XXL'], pg_temp.u(i, 14))),
      'shipping_details', jsonb_build_object(
        'shipping_name', pg_temp.first_name(s) || ' ' || pg_temp.last_name(s),
        'shipping_address_line_1', (1 + s % 200) || ' Example Street', 'shipping_address_line_2', 'Apt ' || (1 + s % 9),
        'shipping_city', pg_temp.pick(ARRAY['Springfield','Lyon','Osaka','Porto','Leeds'], pg_temp.u(s, 107)),
        'shipping_state', 'IL', 'shipping_zip', lpad((10000 + s % 89999)::text, 5, '0'),
        'shipping_country', pg_temp.pick(ARRAY['US','FR','JP','PT','GB'], pg_temp.u(s, 107))))
    WHEN 'sync_subscriber' THEN jsonb_build_object('type', event_type,
      'subscriber', pg_temp.loose(s, pg_temp.pick(ARRAY['verified','pending','rejected'], pg_temp.u(i, 15))))
    WHEN 'new_offer_lead' THEN jsonb_build_object('type', event_type,
      'offer_id', 'offer_' || (1 + k), 'partner_id', 'partner_' || (1 + s % 40), 'lead', pg_temp.loose(s, NULL))
    WHEN 'new_partner_referral' THEN jsonb_build_object('type', event_type,
      'campaign', jsonb_build_object('id', 'PC' || (1 + k), 'referral_code', substr(md5('pc' || k), 1, 8)),
      'referral', pg_temp.loose(s, 'verified'))
    WHEN 'new_partner_pending_referral' THEN jsonb_build_object('type', event_type,
      'campaign', jsonb_build_object('id', 'PC' || (1 + k), 'referral_code', substr(md5('pc' || k), 1, 8)),
      'referral', pg_temp.loose(s, 'pending'))
    ELSE jsonb_build_object('type', event_type, 'referral', pg_temp.loose(s, 'rejected'))
  END AS payload
  FROM plan
) built
"""

# For each event, its deliveries in plan order (sprig, then spruce): what happened to each.
DELIVERIES_INSERT = r"""
INSERT INTO deliveries (event_id, destination, status, lane, attempts, deferrals, last_error, last_status_code,
                        progress, step_times, next_attempt_at, enqueued_at, lease_expires_at, created_at,
                        updated_at, finished_at)
SELECT i, destination, d_status,
       CASE WHEN source = 'backfill' THEN 'catch_up' ELSE 'live' END,
       -- Transient errors are retried until the budget (5 attempts) is spent.
       CASE WHEN d_status = 'failed' AND (last_error LIKE '%-> 5%' OR last_error LIKE '%network error%') THEN 5
            ELSE attempts END,
       CASE WHEN pg_temp.u(i, 20) < 0.05 THEN 1 ELSE 0 END,
       last_error,
       CASE WHEN last_error IS NULL OR last_error LIKE '%network error%' THEN NULL
            ELSE substring(last_error FROM '-> (\d{3})')::int END,
       CASE WHEN d_status IN ('succeeded', 'superseded') THEN
              CASE destination WHEN 'sprig' THEN '{"sprig.attributes.subscriber": true}'::jsonb
                   ELSE jsonb_build_object('spruce.contact', 'entity_' || substr(md5('c' || s), 1, 12))
                        || CASE WHEN event_type LIKE 'reward_%' THEN jsonb_build_object(
                             'spruce.conversation', 'sc_' || substr(md5('v' || s), 1, 12),
                             'spruce.note', 'req_' || substr(md5('n' || i), 1, 12)) ELSE '{}' END END
            ELSE '{}'::jsonb END,
       '{}'::jsonb,
       next_attempt_at,
       CASE WHEN d_status = 'pending' AND received_at > CAST(:now AS timestamptz) - interval '3 seconds' THEN NULL
            ELSE received_at + interval '20 milliseconds' END,
       CASE WHEN d_status = 'in_flight' THEN received_at + interval '5 minutes' END,
       received_at, coalesce(finished_at, received_at + interval '1 second'), finished_at
FROM (
  SELECT p.*, destination, d_status, attempts,
         CASE WHEN d_status = 'failed' THEN pg_temp.vendor_error(destination, pg_temp.u(i, 21), i)
              WHEN (d_status = 'pending' AND attempts > 0) OR attempts > 1 THEN pg_temp.transient_error(destination, i)
         END AS last_error,
         CASE WHEN d_status = 'pending' AND attempts > 0
                   THEN CAST(:now AS timestamptz) + interval '1 second' * (30 + 1800 * pg_temp.u(i, 23))
              ELSE p.received_at END AS next_attempt_at,
         CASE WHEN d_status IN ('succeeded', 'superseded', 'failed')
                   THEN p.received_at + interval '1 second' * (0.3 + 4 * pg_temp.u(i, 7) * attempts) END AS finished_at
  FROM plan p
  CROSS JOIN LATERAL (
    SELECT destination, CASE
        WHEN p.status = 'received' THEN 'pending'
        WHEN p.status = 'processing' THEN CASE WHEN destination = 'sprig' THEN
             CASE WHEN p.received_at > CAST(:now AS timestamptz) - interval '2 minutes' THEN 'in_flight' ELSE 'pending' END
             ELSE 'succeeded' END
        WHEN p.status = 'failed' AND destination = CASE WHEN p.to_spruce AND pg_temp.u(p.i, 24) < 0.7
                                                       THEN 'spruce' ELSE 'sprig' END THEN 'failed'
        WHEN destination = 'sprig' AND p.event_type LIKE 'reward_%' AND pg_temp.u(p.i, 25) < 0.04 THEN 'superseded'
        ELSE 'succeeded' END AS d_status
    FROM (VALUES ('sprig', 1), ('spruce', 2)) AS d(destination, rank)
    WHERE p.status NOT IN ('invalid', 'unhandled') AND (destination = 'sprig' OR p.to_spruce)
    ORDER BY rank
  ) d
  CROSS JOIN LATERAL (SELECT CASE
        WHEN d_status IN ('in_flight', 'pending') AND p.status = 'received' THEN 0
        WHEN d_status = 'in_flight' THEN 1
        WHEN d_status = 'pending' THEN 1 + floor(3 * pg_temp.u(p.i, 26))::int
        WHEN pg_temp.u(p.i, 27) < 0.03 THEN 2
        ELSE 1 END AS attempts) a
  ORDER BY p.i, d.destination
) planned
"""

# Each run of each delivery that ran (workers.engine writes one per run): a retried one's earlier
# runs were retried with a transient error, its last ended as the delivery did; pending and
# in-flight deliveries' earlier runs retried. Spruce answers with its rate headers, daily window
# included.
ATTEMPTS_INSERT = r"""
INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, outcome, vendor_status,
                               vendor_request_id, duration_ms, error, steps, rate_limits)
SELECT d.id, n, started, started + interval '1 millisecond' * ms,
       CASE WHEN n < d.attempts OR d.status IN ('pending', 'in_flight') THEN 'retried' ELSE d.status END,
       CASE WHEN n < d.attempts OR d.status IN ('pending', 'in_flight') THEN 503
            WHEN d.status = 'failed' THEN d.last_status_code
            ELSE CASE d.destination WHEN 'sprig' THEN 202 ELSE 201 END END,
       'req_' || substr(md5('a' || d.id || '.' || n), 1, 16), ms,
       CASE WHEN n < d.attempts OR d.status IN ('pending', 'in_flight')
            THEN d.destination || ' POST -> 503 Service Unavailable'
            WHEN d.status = 'failed' THEN d.last_error END,
       '[]'::json,
       CASE d.destination WHEN 'spruce' THEN json_build_object('limit', 100, 'remaining', 60, 'reset_after', 30,
            'daily_limit', 50000, 'daily_remaining', 40000) ELSE '{}'::json END
FROM deliveries d
CROSS JOIN LATERAL generate_series(1, d.attempts) AS n
CROSS JOIN LATERAL (SELECT d.created_at + interval '4 seconds' * (n - 1) AS started,
                           40 + (hashtext(d.id || '.' || n) & 511) AS ms) t
WHERE d.attempts > 0
"""

# Operators at work: replays, reveals, sign-ins over the 90 days.
AUDIT_INSERT = r"""
INSERT INTO audit_entries (at, actor, interface, address, action, targets, details, outcome, reason)
SELECT CAST(:now AS timestamptz) - interval '90 days' * (k::float / :entries),
       (ARRAY['lead@clinic.example', 'nurse@clinic.example', 'ops'])[1 + k % 3],
       CASE WHEN k % 3 = 2 THEN 'cli' ELSE 'console' END,
       CASE WHEN k % 3 = 2 THEN NULL ELSE '10.0.0.' || (k % 250) END,
       (ARRAY['console.sign-in', 'events.reveal', 'events.replay', 'console.sign-out'])[1 + k % 4],
       json_build_object('events', json_build_array(1 + (k * 7919) % :events)),
       '{}'::json, 'ok', NULL
FROM generate_series(1, :entries) AS k
"""

# relay.subjects in SQL: ids and emails of the payload's people and its top-level email,
# normalised (clean: trimmed, strings and numbers only; emails lower-cased) and digested.
SUBJECTS_INSERT = r"""
INSERT INTO event_subjects (event_id, kind, digest, referral_status)
SELECT DISTINCT e.id, n.kind, encode(sha256(convert_to(n.value, 'UTF8')), 'hex'), st.referral_status
FROM events e
CROSS JOIN LATERAL (
  SELECT CASE WHEN jsonb_typeof(first) = 'string' THEN left(first #>> '{}', 100) END AS referral_status
  FROM (SELECT coalesce(
      CASE WHEN jsonb_typeof(e.payload->'subscriber') = 'object' THEN nullif(e.payload->'subscriber'->'referral_status', 'null') END,
      CASE WHEN jsonb_typeof(e.payload->'lead') = 'object' THEN nullif(e.payload->'lead'->'referral_status', 'null') END,
      CASE WHEN jsonb_typeof(e.payload->'referral') = 'object' THEN nullif(e.payload->'referral'->'referral_status', 'null') END,
      nullif(e.payload->'referral_status', 'null')) AS first) f
) st
CROSS JOIN LATERAL (
  SELECT 'id' AS kind, CASE jsonb_typeof(e.payload->key->'id')
           WHEN 'string' THEN nullif(btrim(e.payload->key->>'id'), '')
           WHEN 'number' THEN e.payload->key->>'id' END AS value
  FROM unnest(ARRAY['subscriber', 'referrer', 'lead', 'referral']) AS key
  WHERE jsonb_typeof(e.payload->key) = 'object'
  UNION ALL
  SELECT 'email', CASE WHEN jsonb_typeof(e.payload->key->'email') = 'string'
                  THEN nullif(lower(btrim(e.payload->key->>'email')), '') END
  FROM unnest(ARRAY['subscriber', 'referrer', 'lead', 'referral']) AS key
  WHERE jsonb_typeof(e.payload->key) = 'object'
  UNION ALL
  SELECT 'email', CASE WHEN jsonb_typeof(e.payload->'email') = 'string'
                  THEN nullif(lower(btrim(e.payload->>'email')), '') END
) n
WHERE n.value IS NOT NULL
"""


def type_case() -> str:
    """The CASE branches choosing an event's type from pg_temp.u(i, 1) by TYPE_SHARES."""
    assert set(TYPE_SHARES) == set(EVENTS), "a type of schemas.events.EVENTS has no share here"
    branches, upto = [], 0.0
    for event_type, share in TYPE_SHARES.items():
        upto += share
        branches.append(f"WHEN pg_temp.u(i, 1) < {upto:.4f} THEN '{event_type}'")
    return " ".join(branches) + f" WHEN pg_temp.u(i, 1) < {upto + (1 - upto) / 2:.4f} THEN '{UNHANDLED_TYPES[0]}'" \
        f" ELSE '{UNHANDLED_TYPES[1]}'"


def recreate(url: str) -> None:
    server, name = url.rsplit("/", 1)
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def schema_objects(conn) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The tables' constraints (table, name, definition) and their other indexes (name, definition)."""
    constraints = conn.execute(sa.text(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid::regclass::text = ANY(:tables) AND contype IN ('p', 'u', 'f') "
        "ORDER BY contype = 'f', conname"), {"tables": list(TABLES)}).all()
    indexes = conn.execute(sa.text(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid::regclass::text = ANY(:tables) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1"),
        {"tables": list(TABLES)}).all()
    return [tuple(c) for c in constraints], [tuple(i) for i in indexes]


def same_schema(one, other) -> bool:
    """The same constraints and indexes, a definition's casts and parentheses aside: PostgreSQL
    prints a rebuilt `status IN ('pending', 'in_flight')` predicate with its casts elsewhere."""
    def normal(objects):
        return [tuple(re.sub(r"::[a-z ]+(\[\])?|[()]", "", part) for part in row) for row in objects]

    return all(normal(a) == normal(b) for a, b in zip(one, other, strict=True))


def step(label: str, conn, sql: str, params: dict | None = None) -> None:
    started = time.monotonic()
    result = conn.execute(sa.text(sql), params or {})
    rows = f", {result.rowcount:,} rows" if result.rowcount and result.rowcount > 0 else ""
    print(f"  {label}: {time.monotonic() - started:.1f} s{rows}", flush=True)


def check_subjects(conn, events: int) -> None:
    """The SQL derivation agrees with relay.subjects on a sample of events."""
    ids = random.Random(11).sample(range(1, events + 1), min(SAMPLE, events))
    payloads = dict(conn.execute(sa.text("SELECT id, payload FROM events WHERE id = ANY(:ids)"), {"ids": ids}).all())
    stored: dict[int, list] = {event_id: [] for event_id in payloads}
    for event_id, kind, digest, status in conn.execute(sa.text(
            "SELECT event_id, kind, digest, referral_status FROM event_subjects WHERE event_id = ANY(:ids)"), {"ids": ids}):
        stored[event_id].append({"kind": kind, "digest": digest, "referral_status": status})
    wrong = [event_id for event_id, payload in payloads.items()
             if sorted(subject_rows(payload, None), key=str) != sorted(stored[event_id], key=str)]
    if wrong:
        raise SystemExit(f"event_subjects differ from relay.subjects for events {wrong[:10]}")
    print(f"  event_subjects match relay.subjects.subject_rows for {len(payloads):,} sampled events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL database to recreate")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--revision", default="head", help="migrate to this Alembic revision (default head)")
    args = parser.parse_args()

    started = time.monotonic()
    now = utcnow()
    print(f"recreating {args.url.rsplit('/', 1)[1]}, migrating to {args.revision}", flush=True)
    recreate(args.url)
    db = Database(args.url)
    db.upgrade(args.revision)
    params = {"now": now, "events": args.events, "subscribers": SUBSCRIBERS, "unhandled": list(UNHANDLED_TYPES)}
    with db.engine.connect() as conn:
        constraints, indexes = schema_objects(conn)
        conn.execute(sa.text("SET synchronous_commit = off; SET maintenance_work_mem = '1GB'; SET work_mem = '256MB'"))
        conn.execute(sa.text(FUNCTIONS))
        for table, name, _ in reversed(constraints):  # foreign keys first
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        print(f"loading {args.events:,} events (indexes and constraints dropped meanwhile)", flush=True)
        step("plan", conn, PLAN.format(type_case=type_case()), params)
        step("events", conn, EVENTS_INSERT, params)
        step("deliveries", conn, DELIVERIES_INSERT, params)
        step("event_subjects", conn, SUBJECTS_INSERT)
        step("delivery_attempts", conn, ATTEMPTS_INSERT)
        step("audit_entries", conn, AUDIT_INSERT, params | {"entries": AUDIT_ENTRIES})
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('events', 'id'), :n)"), {"n": args.events})
        for table, name, definition in constraints:
            step(f"constraint {name}", conn, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for name, definition in indexes:
            step(f"index {name}", conn, definition)
        conn.commit()
        check_subjects(conn, args.events)
        rebuilt = schema_objects(conn)
        assert same_schema(rebuilt, (constraints, indexes)), "the rebuilt schema differs from the migrated one"
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        step("VACUUM ANALYZE", conn, "VACUUM ANALYZE")
        counts = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries), (SELECT count(*) FROM event_subjects), "
            "(SELECT count(*) FROM delivery_attempts), pg_size_pretty(pg_database_size(current_database()))")).one()
    db.dispose()
    print(f"done in {time.monotonic() - started:.0f} s: {counts[0]:,} events, {counts[1]:,} deliveries, "
          f"{counts[2]:,} event_subjects, {counts[3]:,} delivery_attempts, {counts[4]} on disk")


if __name__ == "__main__":
    main()
