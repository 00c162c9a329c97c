DROP TABLE drover_queues;
DROP TABLE drover_job_deps;
DROP TABLE drover_jobs;
