"""The clock's state database: engines, tables, the run ledger, controls, the leader lease, the history writer."""
