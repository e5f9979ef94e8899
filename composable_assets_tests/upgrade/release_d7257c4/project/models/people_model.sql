-- People with a score.
-- owners: team:growth
SELECT id, email, name, score FROM people
