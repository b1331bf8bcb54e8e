"""The schema migrations, NNNN_name.sql, shipped inside the package as broker.migrations."""
