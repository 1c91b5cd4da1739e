"""The trainer side: config, meshes, data, rewards, the judge client, the loop."""
