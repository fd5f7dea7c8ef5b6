"""Leaderboard: tables, statistics, figures and exports of stored results."""
