--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: composable; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA composable;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: audience__high; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.audience__high (
    _key text,
    id bigint,
    email text,
    name text,
    score integer,
    _hash__box_mirror text,
    _hash__box_upsert text
);


--
-- Name: deletion_log; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.deletion_log (
    request_id text,
    key text,
    destination text,
    source text,
    place text,
    identifier_type text,
    identifier_sha256 text,
    status text,
    purged_rows bigint,
    response text,
    requested_at timestamp without time zone,
    done_at timestamp without time zone,
    run_id text
);


--
-- Name: delta__high__box_mirror; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.delta__high__box_mirror (
    _partition date NOT NULL,
    _run_id text NOT NULL,
    _seq bigint NOT NULL,
    _op text NOT NULL,
    _key text NOT NULL,
    _identifier text,
    _hash text,
    _fields json,
    _previous json,
    _computed_at timestamp without time zone NOT NULL
);


--
-- Name: delta__high__box_upsert; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.delta__high__box_upsert (
    _partition date NOT NULL,
    _run_id text NOT NULL,
    _seq bigint NOT NULL,
    _op text NOT NULL,
    _key text NOT NULL,
    _identifier text,
    _hash text,
    _fields json,
    _previous json,
    _computed_at timestamp without time zone NOT NULL
);


--
-- Name: delta_runs; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.delta_runs (
    audience text NOT NULL,
    destination text NOT NULL,
    partition_date date NOT NULL,
    run_id text NOT NULL,
    computed_at timestamp without time zone NOT NULL,
    mode text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    added bigint NOT NULL,
    updated bigint NOT NULL,
    removed bigint NOT NULL,
    audience_size bigint NOT NULL
);


--
-- Name: gate_results; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.gate_results (
    audience text NOT NULL,
    destination text NOT NULL,
    run_id text NOT NULL,
    gate text NOT NULL,
    passed boolean NOT NULL,
    overridden boolean NOT NULL,
    detail text NOT NULL,
    checked_at timestamp without time zone NOT NULL
);


--
-- Name: ledger__high__box_mirror; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.ledger__high__box_mirror (
    _key text NOT NULL,
    _identifier text,
    _hash text NOT NULL,
    _fields json,
    _synced_at timestamp without time zone NOT NULL,
    _run_id text NOT NULL
);


--
-- Name: ledger__high__box_upsert; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.ledger__high__box_upsert (
    _key text NOT NULL,
    _identifier text,
    _hash text NOT NULL,
    _fields json,
    _synced_at timestamp without time zone NOT NULL,
    _run_id text NOT NULL
);


--
-- Name: stream_cursors; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.stream_cursors (
    stream text NOT NULL,
    destination text NOT NULL,
    high_water timestamp without time zone NOT NULL,
    floor_at timestamp without time zone NOT NULL,
    pruned_below timestamp without time zone,
    started_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    run_id text NOT NULL
);


--
-- Name: stream_intents; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.stream_intents (
    stream text NOT NULL,
    destination text NOT NULL,
    run_id text NOT NULL,
    event_id text NOT NULL,
    cursor_value timestamp without time zone NOT NULL,
    recorded_at timestamp without time zone NOT NULL
);


--
-- Name: stream_sent__scores__box_upsert; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.stream_sent__scores__box_upsert (
    event_id text NOT NULL,
    cursor_value timestamp without time zone NOT NULL,
    status text NOT NULL,
    run_id text NOT NULL,
    recorded_at timestamp without time zone NOT NULL,
    partition_date date NOT NULL,
    reason text
);


--
-- Name: sync_acks; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.sync_acks (
    audience text NOT NULL,
    destination text NOT NULL,
    run_id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    acked_at timestamp without time zone NOT NULL,
    folded boolean DEFAULT false NOT NULL
);


--
-- Name: sync_failures; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.sync_failures (
    audience text NOT NULL,
    destination text NOT NULL,
    partition_date date NOT NULL,
    run_id text NOT NULL,
    seq bigint NOT NULL,
    key text NOT NULL,
    op text NOT NULL,
    reason text NOT NULL,
    failed_at timestamp without time zone NOT NULL
);


--
-- Name: sync_inflight; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.sync_inflight (
    audience text NOT NULL,
    destination text NOT NULL,
    run_id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    started_at timestamp without time zone NOT NULL
);


--
-- Name: sync_log; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.sync_log (
    partition_date date,
    sync_run_id text,
    audience text,
    destination text,
    key text,
    identifier text,
    op text,
    row_hash text,
    status text,
    reason text,
    delta_run_id text,
    seq bigint,
    recorded_at timestamp without time zone
);


--
-- Name: sync_runs; Type: TABLE; Schema: composable; Owner: -
--

CREATE TABLE composable.sync_runs (
    run_id text,
    partition_date date,
    audience text,
    destination text,
    delta_run_id text,
    code_version text,
    package_version text,
    audience_sha256 text,
    model_sha256 text,
    upstream_versions text,
    status text,
    added bigint,
    updated bigint,
    removed bigint,
    failed bigint,
    unsent bigint,
    started_at timestamp without time zone,
    finished_at timestamp without time zone
);


--
-- Name: deletion_requests; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.deletion_requests (
    request_id text,
    id bigint,
    requested_at timestamp without time zone
);


--
-- Name: people; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.people (
    id bigint,
    email text,
    name text,
    score integer
);


--
-- Name: people_model; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.people_model (
    id bigint,
    email text,
    name text,
    score integer
);


--
-- Name: score_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.score_events (
    event_id text,
    person_id bigint,
    score integer,
    scored_at timestamp without time zone
);


--
-- Data for Name: audience__high; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.audience__high VALUES ('11', 11, 'p11@example.com', 'name11', 11, '8d2a4fcac7b1e334625832c26c67f4d2', 'f63efed4d00f2b10cc9b113bc1f821b3');
INSERT INTO composable.audience__high VALUES ('12', 12, 'p12@example.com', 'renamed12', 12, '43e7d87522240c2fbe9f52366d255d51', 'fb87de387c7f3e8fc5589e2cea896177');
INSERT INTO composable.audience__high VALUES ('14', 14, 'p14@example.com', 'name14', 14, '2bd9c9a4bb18dafb0a45a4b907675721', 'ddc2424336b726e2076ee3b1b30d588b');
INSERT INTO composable.audience__high VALUES ('15', 15, 'p15@example.com', 'name15', 15, '6be14222bd95bf4b6e49817316c43129', '3bc5eda24dd81d51c256eaf3f180239d');
INSERT INTO composable.audience__high VALUES ('16', 16, 'p16@example.com', 'name16', 16, '28d81e2d5bf55def899f7f5f9c22931e', '34d54fde10596a0ea2dc0357266d7793');
INSERT INTO composable.audience__high VALUES ('17', 17, 'p17@example.com', 'name17', 17, '3b2bbc61ec60cd9871d1de231eceb17d', 'e60665d9afa9a77afaad3c4170bf4e75');
INSERT INTO composable.audience__high VALUES ('18', 18, 'p18@example.com', 'name18', 18, '32e4eb705a05df94135c3c38c8158dd5', '8c9d490bc24fa71ea368f6bd9eaec302');
INSERT INTO composable.audience__high VALUES ('19', 19, 'p19@example.com', 'name19', 19, '9e8621ea2352bb3ebdfe26ca3c807c01', '315aabbd544de20e7eb3752dc7103b34');
INSERT INTO composable.audience__high VALUES ('20', 20, 'p20@example.com', 'name20', 20, '8b9d0de2df5d5a6406084220e7135456', '2d14189824c48cfd769000415c71db97');
INSERT INTO composable.audience__high VALUES ('21', 21, 'p21@example.com', 'name21', 21, '36fb558ba4ddc5b50353f3cb60838a46', 'c8d484bc95e3deca6f56056b652e5663');


--
-- Data for Name: deletion_log; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_mirror', 'audience high', 'outbox', 'external_id', 'f5ca38f748a1d6eaf726b8a42fb575c3c71f1864a8143301782de13da2d9202b', 'purged', NULL, '1 lines removed from 1 outbox files', '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_upsert', 'audience high', 'outbox', 'email', '510c8a30c8dd4f8d64fd28683ab08bd1d0eec29009f58c200c0943e20aea10fe', 'purged', NULL, '1 lines removed from 1 outbox files', '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_upsert', 'stream scores', 'outbox', 'external_id', 'f5ca38f748a1d6eaf726b8a42fb575c3c71f1864a8143301782de13da2d9202b', 'purged', NULL, '1 lines removed from 1 outbox files', '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_mirror', 'audience high', 'composable.ledger__high__box_mirror', NULL, NULL, 'purged', 1, NULL, '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_mirror', 'audience high', 'composable.delta__high__box_mirror', NULL, NULL, 'purged', 1, NULL, '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_mirror', 'audience high', 'composable.sync_log', NULL, NULL, 'purged', 1, NULL, '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_upsert', 'audience high', 'composable.ledger__high__box_upsert', NULL, NULL, 'purged', 1, NULL, '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_upsert', 'audience high', 'composable.delta__high__box_upsert', NULL, NULL, 'purged', 1, NULL, '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');
INSERT INTO composable.deletion_log VALUES ('req-20', '20', 'box_upsert', 'audience high', 'composable.sync_log', NULL, NULL, 'purged', 1, NULL, '2026-03-02 12:00:00', '2026-12-07 05:18:42.947697', '68cfb7ba-e0b6-4e31-ac84-ba56cbd8c5a6');


--
-- Data for Name: delta__high__box_mirror; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 1, 'add', '11', '11', '8d2a4fcac7b1e334625832c26c67f4d2', '{"email" : "p11@example.com", "name" : "name11"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 2, 'add', '12', '12', 'f81227438ef6efd2cfbddfadde2fa5ff', '{"email" : "p12@example.com", "name" : "name12"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 3, 'add', '13', '13', '81863a386822fba88433e117bdb5f5f2', '{"email" : "p13@example.com", "name" : "name13"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 4, 'add', '14', '14', '2bd9c9a4bb18dafb0a45a4b907675721', '{"email" : "p14@example.com", "name" : "name14"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 5, 'add', '15', '15', '6be14222bd95bf4b6e49817316c43129', '{"email" : "p15@example.com", "name" : "name15"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 6, 'add', '16', '16', '28d81e2d5bf55def899f7f5f9c22931e', '{"email" : "p16@example.com", "name" : "name16"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 7, 'add', '17', '17', '3b2bbc61ec60cd9871d1de231eceb17d', '{"email" : "p17@example.com", "name" : "name17"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 8, 'add', '18', '18', '32e4eb705a05df94135c3c38c8158dd5', '{"email" : "p18@example.com", "name" : "name18"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 9, 'add', '19', '19', '9e8621ea2352bb3ebdfe26ca3c807c01', '{"email" : "p19@example.com", "name" : "name19"}', NULL, '2026-12-07 05:18:39.441688');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 10, 'update', '12', '12', '43e7d87522240c2fbe9f52366d255d51', '{"email" : "p12@example.com", "name" : "renamed12"}', '{"email" : "p12@example.com", "name" : "name12"}', '2026-12-07 05:18:44.536861');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 11, 'remove', '13', '13', NULL, NULL, '{"email" : "p13@example.com", "name" : "name13"}', '2026-12-07 05:18:44.536861');
INSERT INTO composable.delta__high__box_mirror VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 12, 'add', '21', '21', '36fb558ba4ddc5b50353f3cb60838a46', '{"email" : "p21@example.com", "name" : "name21"}', NULL, '2026-12-07 05:18:44.536861');


--
-- Data for Name: delta__high__box_upsert; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 1, 'add', '11', 'p11@example.com', 'f63efed4d00f2b10cc9b113bc1f821b3', '{"name" : "name11", "score" : 11}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 2, 'add', '12', 'p12@example.com', '94273fb524900ab1da1efef5c08f98bc', '{"name" : "name12", "score" : 12}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 3, 'add', '13', 'p13@example.com', '7b612ce574d0af1355349d24cc3db424', '{"name" : "name13", "score" : 13}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 4, 'add', '14', 'p14@example.com', 'ddc2424336b726e2076ee3b1b30d588b', '{"name" : "name14", "score" : 14}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 5, 'add', '15', 'p15@example.com', '3bc5eda24dd81d51c256eaf3f180239d', '{"name" : "name15", "score" : 15}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 6, 'add', '16', 'p16@example.com', '34d54fde10596a0ea2dc0357266d7793', '{"name" : "name16", "score" : 16}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 7, 'add', '17', 'p17@example.com', 'e60665d9afa9a77afaad3c4170bf4e75', '{"name" : "name17", "score" : 17}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 8, 'add', '18', 'p18@example.com', '8c9d490bc24fa71ea368f6bd9eaec302', '{"name" : "name18", "score" : 18}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 9, 'add', '19', 'p19@example.com', '315aabbd544de20e7eb3752dc7103b34', '{"name" : "name19", "score" : 19}', NULL, '2026-12-07 05:18:40.001371');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 10, 'update', '12', 'p12@example.com', 'fb87de387c7f3e8fc5589e2cea896177', '{"name" : "renamed12", "score" : 12}', '{"name" : "name12", "score" : 12}', '2026-12-07 05:18:44.917489');
INSERT INTO composable.delta__high__box_upsert VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 11, 'add', '21', 'p21@example.com', 'c8d484bc95e3deca6f56056b652e5663', '{"name" : "name21", "score" : 21}', NULL, '2026-12-07 05:18:44.917489');


--
-- Data for Name: delta_runs; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.delta_runs VALUES ('high', 'box_mirror', '2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', '2026-12-07 05:18:39.441688', 'mirror', 1, 10, 10, 0, 0, 10);
INSERT INTO composable.delta_runs VALUES ('high', 'box_upsert', '2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', '2026-12-07 05:18:40.001371', 'upsert', 1, 10, 10, 0, 0, 10);
INSERT INTO composable.delta_runs VALUES ('high', 'box_mirror', '2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', '2026-12-07 05:18:44.536861', 'mirror', 10, 12, 1, 1, 1, 10);
INSERT INTO composable.delta_runs VALUES ('high', 'box_upsert', '2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', '2026-12-07 05:18:44.917489', 'upsert', 10, 11, 1, 1, 0, 10);


--
-- Data for Name: gate_results; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'max_remove_percent', true, false, '0 members at the destination, under min_members 100', '2026-12-07 05:18:39.575091');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'max_change_percent', true, false, 'first delta: nothing to compare with', '2026-12-07 05:18:39.575091');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'required_fields', true, false, 'no required field is sent to this destination', '2026-12-07 05:18:39.575091');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'unique_identifiers', true, false, '0 identifiers are shared by more than one member', '2026-12-07 05:18:39.575091');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'consent_applied', true, false, '0 added or updated members may not be sent here (no consent for the purpose, or a deletion request)', '2026-12-07 05:18:39.575091');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'max_remove_percent', true, false, 'upsert mode never removes', '2026-12-07 05:18:40.075645');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'max_change_percent', true, false, 'first delta: nothing to compare with', '2026-12-07 05:18:40.075645');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'required_fields', true, false, 'no required field is sent to this destination', '2026-12-07 05:18:40.075645');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'unique_identifiers', true, false, '0 identifiers are shared by more than one member', '2026-12-07 05:18:40.075645');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'consent_applied', true, false, '0 added or updated members may not be sent here (no consent for the purpose, or a deletion request)', '2026-12-07 05:18:40.075645');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'max_remove_percent', true, false, '9 members at the destination, under min_members 100', '2026-12-07 05:18:44.553209');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'max_change_percent', true, false, 'previous size 10, under min_members 100', '2026-12-07 05:18:44.553209');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'required_fields', true, false, 'no required field is sent to this destination', '2026-12-07 05:18:44.553209');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'unique_identifiers', true, false, '0 identifiers are shared by more than one member', '2026-12-07 05:18:44.553209');
INSERT INTO composable.gate_results VALUES ('high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'consent_applied', true, false, '0 added or updated members may not be sent here (no consent for the purpose, or a deletion request)', '2026-12-07 05:18:44.553209');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'max_remove_percent', true, false, 'upsert mode never removes', '2026-12-07 05:18:44.92837');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'max_change_percent', true, false, 'previous size 10, under min_members 100', '2026-12-07 05:18:44.92837');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'required_fields', true, false, 'no required field is sent to this destination', '2026-12-07 05:18:44.92837');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'unique_identifiers', true, false, '0 identifiers are shared by more than one member', '2026-12-07 05:18:44.92837');
INSERT INTO composable.gate_results VALUES ('high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'consent_applied', true, false, '0 added or updated members may not be sent here (no consent for the purpose, or a deletion request)', '2026-12-07 05:18:44.92837');


--
-- Data for Name: ledger__high__box_mirror; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.ledger__high__box_mirror VALUES ('16', '16', '28d81e2d5bf55def899f7f5f9c22931e', '{"email" : "p16@example.com", "name" : "name16"}', '2026-12-07 05:18:40.567003', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('11', '11', '8d2a4fcac7b1e334625832c26c67f4d2', '{"email" : "p11@example.com", "name" : "name11"}', '2026-12-07 05:18:40.555864', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('17', '17', '3b2bbc61ec60cd9871d1de231eceb17d', '{"email" : "p17@example.com", "name" : "name17"}', '2026-12-07 05:18:40.569142', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('15', '15', '6be14222bd95bf4b6e49817316c43129', '{"email" : "p15@example.com", "name" : "name15"}', '2026-12-07 05:18:40.567003', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('14', '14', '2bd9c9a4bb18dafb0a45a4b907675721', '{"email" : "p14@example.com", "name" : "name14"}', '2026-12-07 05:18:40.567003', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('19', '19', '9e8621ea2352bb3ebdfe26ca3c807c01', '{"email" : "p19@example.com", "name" : "name19"}', '2026-12-07 05:18:40.569142', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('18', '18', '32e4eb705a05df94135c3c38c8158dd5', '{"email" : "p18@example.com", "name" : "name18"}', '2026-12-07 05:18:40.569142', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_mirror VALUES ('12', '12', '43e7d87522240c2fbe9f52366d255d51', '{"email" : "p12@example.com", "name" : "renamed12"}', '2026-12-07 05:18:45.402534', 'bfd6ea39-7a16-4073-81ee-1549edea44a8');
INSERT INTO composable.ledger__high__box_mirror VALUES ('21', '21', '36fb558ba4ddc5b50353f3cb60838a46', '{"email" : "p21@example.com", "name" : "name21"}', '2026-12-07 05:18:45.402534', 'bfd6ea39-7a16-4073-81ee-1549edea44a8');


--
-- Data for Name: ledger__high__box_upsert; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.ledger__high__box_upsert VALUES ('16', 'p16@example.com', '34d54fde10596a0ea2dc0357266d7793', '{"name" : "name16", "score" : 16}', '2026-12-07 05:18:40.81508', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('11', 'p11@example.com', 'f63efed4d00f2b10cc9b113bc1f821b3', '{"name" : "name11", "score" : 11}', '2026-12-07 05:18:40.805452', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('17', 'p17@example.com', 'e60665d9afa9a77afaad3c4170bf4e75', '{"name" : "name17", "score" : 17}', '2026-12-07 05:18:40.81735', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('15', 'p15@example.com', '3bc5eda24dd81d51c256eaf3f180239d', '{"name" : "name15", "score" : 15}', '2026-12-07 05:18:40.81508', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('14', 'p14@example.com', 'ddc2424336b726e2076ee3b1b30d588b', '{"name" : "name14", "score" : 14}', '2026-12-07 05:18:40.81508', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('13', 'p13@example.com', '7b612ce574d0af1355349d24cc3db424', '{"name" : "name13", "score" : 13}', '2026-12-07 05:18:40.805452', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('19', 'p19@example.com', '315aabbd544de20e7eb3752dc7103b34', '{"name" : "name19", "score" : 19}', '2026-12-07 05:18:40.81735', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('18', 'p18@example.com', '8c9d490bc24fa71ea368f6bd9eaec302', '{"name" : "name18", "score" : 18}', '2026-12-07 05:18:40.81735', '3f2aaa3c-3204-46e8-9f51-79954b55552a');
INSERT INTO composable.ledger__high__box_upsert VALUES ('12', 'p12@example.com', 'fb87de387c7f3e8fc5589e2cea896177', '{"name" : "renamed12", "score" : 12}', '2026-12-07 05:18:45.590372', 'bfd6ea39-7a16-4073-81ee-1549edea44a8');
INSERT INTO composable.ledger__high__box_upsert VALUES ('21', 'p21@example.com', 'c8d484bc95e3deca6f56056b652e5663', '{"name" : "name21", "score" : 21}', '2026-12-07 05:18:45.590372', 'bfd6ea39-7a16-4073-81ee-1549edea44a8');


--
-- Data for Name: stream_cursors; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.stream_cursors VALUES ('scores', 'box_upsert', '2026-03-01 09:00:00', '2026-03-01 00:00:00', '2026-02-27 09:00:00', '2026-12-07 05:18:41.798289', '2026-12-07 05:18:41.956555', '1218c338-b81a-40d5-a19d-48c9006aabbc');


--
-- Data for Name: stream_intents; Type: TABLE DATA; Schema: composable; Owner: -
--



--
-- Data for Name: stream_sent__scores__box_upsert; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e20', '2026-03-01 00:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.906148', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e11', '2026-03-01 01:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.906148', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e12', '2026-03-01 02:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.906148', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e13', '2026-03-01 03:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.92897', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e14', '2026-03-01 04:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.92897', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e15', '2026-03-01 05:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.92897', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e16', '2026-03-01 06:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.94339', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e17', '2026-03-01 07:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.94339', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e18', '2026-03-01 08:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.94339', '2026-03-02', NULL);
INSERT INTO composable.stream_sent__scores__box_upsert VALUES ('scores:e19', '2026-03-01 09:00:00', 'sent', '1218c338-b81a-40d5-a19d-48c9006aabbc', '2026-12-07 05:18:41.956555', '2026-03-02', NULL);


--
-- Data for Name: sync_acks; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.sync_acks VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 1, 3, '2026-12-07 05:18:40.555864', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 4, 6, '2026-12-07 05:18:40.567003', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 7, 9, '2026-12-07 05:18:40.569142', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 10, 10, '2026-12-07 05:18:40.570112', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 1, 3, '2026-12-07 05:18:40.805452', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 4, 6, '2026-12-07 05:18:40.81508', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 7, 9, '2026-12-07 05:18:40.81735', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 10, 10, '2026-12-07 05:18:40.818301', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 10, 12, '2026-12-07 05:18:45.402534', true);
INSERT INTO composable.sync_acks VALUES ('high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 10, 11, '2026-12-07 05:18:45.590372', true);


--
-- Data for Name: sync_failures; Type: TABLE DATA; Schema: composable; Owner: -
--



--
-- Data for Name: sync_inflight; Type: TABLE DATA; Schema: composable; Owner: -
--



--
-- Data for Name: sync_log; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '11', '11', 'add', '8d2a4fcac7b1e334625832c26c67f4d2', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 1, '2026-12-07 05:18:40.555864');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '12', '12', 'add', 'f81227438ef6efd2cfbddfadde2fa5ff', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 2, '2026-12-07 05:18:40.555864');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '13', '13', 'add', '81863a386822fba88433e117bdb5f5f2', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 3, '2026-12-07 05:18:40.555864');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '14', '14', 'add', '2bd9c9a4bb18dafb0a45a4b907675721', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 4, '2026-12-07 05:18:40.567003');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '15', '15', 'add', '6be14222bd95bf4b6e49817316c43129', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 5, '2026-12-07 05:18:40.567003');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '16', '16', 'add', '28d81e2d5bf55def899f7f5f9c22931e', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 6, '2026-12-07 05:18:40.567003');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '17', '17', 'add', '3b2bbc61ec60cd9871d1de231eceb17d', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 7, '2026-12-07 05:18:40.569142');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '18', '18', 'add', '32e4eb705a05df94135c3c38c8158dd5', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 8, '2026-12-07 05:18:40.569142');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_mirror', '19', '19', 'add', '9e8621ea2352bb3ebdfe26ca3c807c01', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 9, '2026-12-07 05:18:40.569142');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '11', 'p11@example.com', 'add', 'f63efed4d00f2b10cc9b113bc1f821b3', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 1, '2026-12-07 05:18:40.805452');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '12', 'p12@example.com', 'add', '94273fb524900ab1da1efef5c08f98bc', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 2, '2026-12-07 05:18:40.805452');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '13', 'p13@example.com', 'add', '7b612ce574d0af1355349d24cc3db424', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 3, '2026-12-07 05:18:40.805452');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '14', 'p14@example.com', 'add', 'ddc2424336b726e2076ee3b1b30d588b', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 4, '2026-12-07 05:18:40.81508');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '15', 'p15@example.com', 'add', '3bc5eda24dd81d51c256eaf3f180239d', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 5, '2026-12-07 05:18:40.81508');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '16', 'p16@example.com', 'add', '34d54fde10596a0ea2dc0357266d7793', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 6, '2026-12-07 05:18:40.81508');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '17', 'p17@example.com', 'add', 'e60665d9afa9a77afaad3c4170bf4e75', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 7, '2026-12-07 05:18:40.81735');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '18', 'p18@example.com', 'add', '8c9d490bc24fa71ea368f6bd9eaec302', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 8, '2026-12-07 05:18:40.81735');
INSERT INTO composable.sync_log VALUES ('2026-03-02', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'high', 'box_upsert', '19', 'p19@example.com', 'add', '315aabbd544de20e7eb3752dc7103b34', 'delivered', NULL, '3f2aaa3c-3204-46e8-9f51-79954b55552a', 9, '2026-12-07 05:18:40.81735');
INSERT INTO composable.sync_log VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'high', 'box_mirror', '12', '12', 'update', '43e7d87522240c2fbe9f52366d255d51', 'delivered', NULL, 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 10, '2026-12-07 05:18:45.402534');
INSERT INTO composable.sync_log VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'high', 'box_mirror', '13', '13', 'remove', NULL, 'delivered', NULL, 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 11, '2026-12-07 05:18:45.402534');
INSERT INTO composable.sync_log VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'high', 'box_mirror', '21', '21', 'add', '36fb558ba4ddc5b50353f3cb60838a46', 'delivered', NULL, 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 12, '2026-12-07 05:18:45.402534');
INSERT INTO composable.sync_log VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'high', 'box_upsert', '12', 'p12@example.com', 'update', 'fb87de387c7f3e8fc5589e2cea896177', 'delivered', NULL, 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 10, '2026-12-07 05:18:45.590372');
INSERT INTO composable.sync_log VALUES ('2026-03-03', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'high', 'box_upsert', '21', 'p21@example.com', 'add', 'c8d484bc95e3deca6f56056b652e5663', 'delivered', NULL, 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 11, '2026-12-07 05:18:45.590372');


--
-- Data for Name: sync_runs; Type: TABLE DATA; Schema: composable; Owner: -
--

INSERT INTO composable.sync_runs VALUES ('3f2aaa3c-3204-46e8-9f51-79954b55552a', '2026-03-02', 'high', 'box_mirror', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'f89b157eb2ae27c1', '0.1.0', '28ca9337647c89054567ebf3e236585b9847679296dede58b1a5175986a18ea4', '7a33d735018c326aea5702bf91d9c84c43a32eb244b531e42dbb5208c834554f', '{"audience/high": {"code_version": "28ca9337647c8905", "data_version": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "run_id": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "storage_id": 19}, "model/people_model": {"code_version": "7a33d735018c326a", "data_version": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "run_id": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "storage_id": 18}, "source/people": {"code_version": null, "data_version": "INITIAL", "run_id": null, "storage_id": null}}', 'succeeded', 10, 0, 0, 0, 0, '2026-12-07 05:18:40.525296', '2026-12-07 05:18:40.612127');
INSERT INTO composable.sync_runs VALUES ('3f2aaa3c-3204-46e8-9f51-79954b55552a', '2026-03-02', 'high', 'box_upsert', '3f2aaa3c-3204-46e8-9f51-79954b55552a', 'f89b157eb2ae27c1', '0.1.0', '28ca9337647c89054567ebf3e236585b9847679296dede58b1a5175986a18ea4', '7a33d735018c326aea5702bf91d9c84c43a32eb244b531e42dbb5208c834554f', '{"audience/high": {"code_version": "28ca9337647c8905", "data_version": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "run_id": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "storage_id": 19}, "model/people_model": {"code_version": "7a33d735018c326a", "data_version": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "run_id": "3f2aaa3c-3204-46e8-9f51-79954b55552a", "storage_id": 18}, "source/people": {"code_version": null, "data_version": "INITIAL", "run_id": null, "storage_id": null}}', 'succeeded', 10, 0, 0, 0, 0, '2026-12-07 05:18:40.790133', '2026-12-07 05:18:40.854142');
INSERT INTO composable.sync_runs VALUES ('bfd6ea39-7a16-4073-81ee-1549edea44a8', '2026-03-03', 'high', 'box_mirror', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'f89b157eb2ae27c1', '0.1.0', '28ca9337647c89054567ebf3e236585b9847679296dede58b1a5175986a18ea4', '7a33d735018c326aea5702bf91d9c84c43a32eb244b531e42dbb5208c834554f', '{"audience/high": {"code_version": "28ca9337647c8905", "data_version": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "run_id": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "storage_id": 63}, "model/people_model": {"code_version": "7a33d735018c326a", "data_version": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "run_id": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "storage_id": 62}, "source/people": {"code_version": null, "data_version": "INITIAL", "run_id": null, "storage_id": null}}', 'succeeded', 1, 1, 1, 0, 0, '2026-12-07 05:18:45.37212', '2026-12-07 05:18:45.417314');
INSERT INTO composable.sync_runs VALUES ('bfd6ea39-7a16-4073-81ee-1549edea44a8', '2026-03-03', 'high', 'box_upsert', 'bfd6ea39-7a16-4073-81ee-1549edea44a8', 'f89b157eb2ae27c1', '0.1.0', '28ca9337647c89054567ebf3e236585b9847679296dede58b1a5175986a18ea4', '7a33d735018c326aea5702bf91d9c84c43a32eb244b531e42dbb5208c834554f', '{"audience/high": {"code_version": "28ca9337647c8905", "data_version": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "run_id": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "storage_id": 63}, "model/people_model": {"code_version": "7a33d735018c326a", "data_version": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "run_id": "bfd6ea39-7a16-4073-81ee-1549edea44a8", "storage_id": 62}, "source/people": {"code_version": null, "data_version": "INITIAL", "run_id": null, "storage_id": null}}', 'succeeded', 1, 1, 0, 0, 0, '2026-12-07 05:18:45.575319', '2026-12-07 05:18:45.603687');


--
-- Data for Name: deletion_requests; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.deletion_requests VALUES ('req-20', 20, '2026-03-02 12:00:00');


--
-- Data for Name: people; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.people VALUES (1, 'p1@example.com', 'name1', 1);
INSERT INTO public.people VALUES (2, 'p2@example.com', 'name2', 2);
INSERT INTO public.people VALUES (3, 'p3@example.com', 'name3', 3);
INSERT INTO public.people VALUES (4, 'p4@example.com', 'name4', 4);
INSERT INTO public.people VALUES (5, 'p5@example.com', 'name5', 5);
INSERT INTO public.people VALUES (6, 'p6@example.com', 'name6', 6);
INSERT INTO public.people VALUES (7, 'p7@example.com', 'name7', 7);
INSERT INTO public.people VALUES (8, 'p8@example.com', 'name8', 8);
INSERT INTO public.people VALUES (9, 'p9@example.com', 'name9', 9);
INSERT INTO public.people VALUES (10, 'p10@example.com', 'name10', 10);
INSERT INTO public.people VALUES (11, 'p11@example.com', 'name11', 11);
INSERT INTO public.people VALUES (12, 'p12@example.com', 'renamed12', 12);
INSERT INTO public.people VALUES (13, 'p13@example.com', 'name13', 5);
INSERT INTO public.people VALUES (14, 'p14@example.com', 'name14', 14);
INSERT INTO public.people VALUES (15, 'p15@example.com', 'name15', 15);
INSERT INTO public.people VALUES (16, 'p16@example.com', 'name16', 16);
INSERT INTO public.people VALUES (17, 'p17@example.com', 'name17', 17);
INSERT INTO public.people VALUES (18, 'p18@example.com', 'name18', 18);
INSERT INTO public.people VALUES (19, 'p19@example.com', 'name19', 19);
INSERT INTO public.people VALUES (20, 'p20@example.com', 'name20', 20);
INSERT INTO public.people VALUES (21, 'p21@example.com', 'name21', 21);


--
-- Data for Name: people_model; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.people_model VALUES (1, 'p1@example.com', 'name1', 1);
INSERT INTO public.people_model VALUES (2, 'p2@example.com', 'name2', 2);
INSERT INTO public.people_model VALUES (3, 'p3@example.com', 'name3', 3);
INSERT INTO public.people_model VALUES (4, 'p4@example.com', 'name4', 4);
INSERT INTO public.people_model VALUES (5, 'p5@example.com', 'name5', 5);
INSERT INTO public.people_model VALUES (6, 'p6@example.com', 'name6', 6);
INSERT INTO public.people_model VALUES (7, 'p7@example.com', 'name7', 7);
INSERT INTO public.people_model VALUES (8, 'p8@example.com', 'name8', 8);
INSERT INTO public.people_model VALUES (9, 'p9@example.com', 'name9', 9);
INSERT INTO public.people_model VALUES (10, 'p10@example.com', 'name10', 10);
INSERT INTO public.people_model VALUES (11, 'p11@example.com', 'name11', 11);
INSERT INTO public.people_model VALUES (12, 'p12@example.com', 'renamed12', 12);
INSERT INTO public.people_model VALUES (13, 'p13@example.com', 'name13', 5);
INSERT INTO public.people_model VALUES (14, 'p14@example.com', 'name14', 14);
INSERT INTO public.people_model VALUES (15, 'p15@example.com', 'name15', 15);
INSERT INTO public.people_model VALUES (16, 'p16@example.com', 'name16', 16);
INSERT INTO public.people_model VALUES (17, 'p17@example.com', 'name17', 17);
INSERT INTO public.people_model VALUES (18, 'p18@example.com', 'name18', 18);
INSERT INTO public.people_model VALUES (19, 'p19@example.com', 'name19', 19);
INSERT INTO public.people_model VALUES (20, 'p20@example.com', 'name20', 20);
INSERT INTO public.people_model VALUES (21, 'p21@example.com', 'name21', 21);


--
-- Data for Name: score_events; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.score_events VALUES ('e11', 11, 11, '2026-03-01 01:00:00');
INSERT INTO public.score_events VALUES ('e12', 12, 12, '2026-03-01 02:00:00');
INSERT INTO public.score_events VALUES ('e13', 13, 13, '2026-03-01 03:00:00');
INSERT INTO public.score_events VALUES ('e14', 14, 14, '2026-03-01 04:00:00');
INSERT INTO public.score_events VALUES ('e15', 15, 15, '2026-03-01 05:00:00');
INSERT INTO public.score_events VALUES ('e16', 16, 16, '2026-03-01 06:00:00');
INSERT INTO public.score_events VALUES ('e17', 17, 17, '2026-03-01 07:00:00');
INSERT INTO public.score_events VALUES ('e18', 18, 18, '2026-03-01 08:00:00');
INSERT INTO public.score_events VALUES ('e19', 19, 19, '2026-03-01 09:00:00');
INSERT INTO public.score_events VALUES ('e20', 20, 20, '2026-03-01 00:00:00');


--
-- Name: composable_2c4a52c467a26c3e3024; Type: INDEX; Schema: composable; Owner: -
--

CREATE INDEX composable_2c4a52c467a26c3e3024 ON composable.delta__high__box_mirror USING btree (_seq);


--
-- Name: composable_a2f1fbbbe384f997a23e; Type: INDEX; Schema: composable; Owner: -
--

CREATE INDEX composable_a2f1fbbbe384f997a23e ON composable.delta__high__box_upsert USING btree (_seq);


--
-- PostgreSQL database dump complete
--


