"""The HTTP gateway (`ticketflow serve`): apps that do not speak Kafka post tickets and wait
for, read or stream their answers. One more independent process: it produces to
``tickets.ingress`` and reads the egress; Kafka stays the system of record."""
