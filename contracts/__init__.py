"""Schemas that cross the queue and the warehouse. Pure: no I/O, imports no stage."""
