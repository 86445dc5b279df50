-- The job list (operation logs) of a project, newest first.
CREATE INDEX jobs_project_created ON jobs (project_id, created_at);
