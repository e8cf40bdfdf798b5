"""Wire contracts: topic catalogue, versioned event models, relational and ClickHouse schemas."""
