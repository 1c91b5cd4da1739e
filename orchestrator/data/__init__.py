"""What the stages read: dataset rows, SFT rows and preference pairs, tasks
generated with reasoning-gym and their traces, and the prompt template."""
