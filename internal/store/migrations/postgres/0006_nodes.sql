-- Scale-out (issue 11): the nodes of a cluster, the servers each one's compute
-- driver has, and the node a job must run on. Times are unix microseconds.

-- A node is every csbs process with the same node.name. Each renews its row
-- (heartbeat_at, expires_at) periodically; past expires_at the node is down.
CREATE TABLE nodes (
	name         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	started_at   BIGINT NOT NULL,
	heartbeat_at BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL
);

-- The servers a node's driver knows, as the node last published them
-- (server: the compute.Server as JSON). A node replaces all of its rows at once.
CREATE TABLE node_servers (
	node       TEXT COLLATE "C" NOT NULL,
	server_id  TEXT COLLATE "C" NOT NULL,
	project_id TEXT NOT NULL,
	server     TEXT NOT NULL,
	PRIMARY KEY (node, server_id)
);

CREATE INDEX node_servers_server ON node_servers (server_id);
CREATE INDEX node_servers_project ON node_servers (project_id);

-- The node that must run a job: '' for jobs any node may run (deletes, and
-- every job of a single-node installation).
ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT '';
