-- Owners namespaced by issuer (issue 14). An identity provider's owners are
-- "<issuer name>:<sub>"; a local token may not name such an owner. Local owners created before
-- a provider was configured could still have that form, so a provider's namespace is claimed
-- once, the first time a broker starts with it, and only if no owner has it yet; after that
-- its owners are its own.
-- migrate:up
CREATE TABLE issuer_namespaces (
    name       text        PRIMARY KEY,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE issuer_namespaces;
