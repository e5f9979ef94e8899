"""Automation from the audience files: schedules for hourly, daily, weekly and cron cadences."""
