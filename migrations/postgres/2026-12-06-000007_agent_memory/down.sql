DROP TABLE turns;
DROP TABLE agent_states;
