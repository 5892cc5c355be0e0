"""A single-node Apache Kafka broker in KRaft mode, from its Maven Central jars.

The jars are fetched once with Maven (``infra/kafka/pom.xml``) into
``STATE/kafka/libs``; the storage is formatted once; the broker runs as a detached JVM
whose pid, data and logs live under ``STATE/kafka``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from pipeline.errors import ServiceError
from pipeline.services.base import LocalService
from pipeline.settings import REPO_ROOT, Settings

KAFKA_INFRA = REPO_ROOT / "infra" / "kafka"
# A cold JVM plus KRaft log recovery takes ~5-15 s on two cores; leave room for a busy machine.
START_TIMEOUT_S = 120.0


class KafkaBroker(LocalService):
    name = "kafka"
    start_timeout_s = START_TIMEOUT_S
    # A clean shutdown writes the KRaft snapshot; give it time before SIGKILL.
    stop_grace_s = 30.0
    external_variable = "TICKETFLOW_KAFKA_BOOTSTRAP_SERVERS"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir.resolve() / "kafka"
        self.libs = self.home / "libs"
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self.pid_file = self.home / "broker.pid"
        self.config = self.home / "server.properties"

    @property
    def external(self) -> bool:
        return self.settings.kafka_bootstrap_servers is not None

    @property
    def address(self) -> str:
        return self.settings.bootstrap_servers()

    def start(self) -> None:
        self._fetch_jars()
        self._write_config()
        self._format_storage()
        print(f"kafka: starting broker on {self.address}...", file=sys.stderr)
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "stdout.log").open("ab") as out:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
            )
        self.pid_file.write_text(f"{proc.pid}\n")

    def answers(self) -> bool:
        admin = AdminClient({**self.settings.kafka_common(), "socket.connection.setup.timeout.ms": 2000,
                             "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:  # KafkaException on timeout: the broker is not (yet) there
            return False
        return len(metadata.brokers) > 0

    # -- steps -------------------------------------------------------------------------

    def _fetch_jars(self) -> None:
        marker = self.libs / ".complete"
        if marker.exists():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError("Maven (mvn) is needed once to fetch Kafka's jars; install it")
        self.libs.mkdir(parents=True, exist_ok=True)
        print("kafka: fetching broker jars with Maven (once)...", file=sys.stderr)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(KAFKA_INFRA / "pom.xml"),
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={self.libs}"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"mvn could not fetch Kafka jars:\n{result.stdout}\n{result.stderr}")
        marker.write_text("ok\n")

    def _write_config(self) -> None:
        template = (KAFKA_INFRA / "server.properties.template").read_text()
        self.home.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            template.format(
                port=self.settings.local_kafka_port,
                controller_port=self.settings.local_kafka_controller_port,
                data_dir=self.data,
            )
        )

    def _java(self, main: str, *args: str, log: Path | None = None) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceError("a JDK (java) is needed to run the local Kafka broker")
        self.logs.mkdir(parents=True, exist_ok=True)
        return [
            java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{KAFKA_INFRA / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def _format_storage(self) -> None:
        if (self.data / "meta.properties").exists():
            return
        cluster_id = "-"
        while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: a leading '-' reads as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config)),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")
