-- Scores as they are given (the stream reads its source table).
SELECT event_id, person_id, score, scored_at FROM score_events
