"""What vulture (the dead-code check of tests/test_architecture.py) cannot see being used.

Each line names code used from outside Python's static view: a framework calls it, a test or the
harness reads it, or it is a field of a record whose shape is the protocol's or the file's.
"""
# click: commands registered on the group by their decorators
demo_cmd, migrate_cmd, pg_cmd, inspect_cmd, state_list, state_clear, sync_status_cmd, sync_drop_cmd, verify_cmd
_.panels  # rich-click reads a command's option groups (cli.common.help_layout)
_.epilog  # click prints it under a command's help (cli.common.help_layout: the environment-variable rule)
# called by the standard library or prometheus_client, not by us
_.collect  # a prometheus_client collector
_.daemon_threads  # http.server.ThreadingHTTPServer
_.do_GET  # http.server.BaseHTTPRequestHandler
_.log_message  # http.server.BaseHTTPRequestHandler
_.msg  # logging.LogRecord, rewritten by the redacting filter
__getattr__  # destination/__init__.py: a module attribute imported on first use (PEP 562)
# fields of stored records and decoded protocol messages (their shape is the file's or PostgreSQL's)
_.created_at  # destination.checkpoints.MigrationState, saved with the progress
_.is_key  # source.pgoutput: a Relation column's flag as PostgreSQL sends it
_.replica_identity  # source.pgoutput.Relation
_.cascade  # source.pgoutput.Truncate
_.restart_identity  # source.pgoutput.Truncate
# counters read by the tests and the benchmarks
_.partial_updates  # sync.options.SyncStats
_.schema_changes  # sync.options.SyncStats
# used by the test harness
server_problem  # localpg: tests/conftest.py asks which servers can run
go_uuid_of  # source.checks: tests prove the SQL UUID parser equals mapping.ids.go_uuid_parse
query_encoder  # destination.bm25: the query side of --qdrant.bm25 (tests query with it; a user's own code may)
