DROP TABLE drover_leader;
