"""Hardware: energy profiles (hw_profiles/*.toml) and the Loihi resource estimate of an export."""
