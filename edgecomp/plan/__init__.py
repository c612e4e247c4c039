"""Planning: target and hardware-profile schemas, and the planner that chooses a recipe."""
