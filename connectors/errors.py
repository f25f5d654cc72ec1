"""Connector errors: transient ones are retried, terminal ones become an HTTP answer."""


class ConnectorError(Exception):
    """Base of every error the connectors stage raises on purpose."""


class OutboxUnavailableError(ConnectorError):
    """The local outbox could not make a request durable (write error or timeout): answer 500."""


class ImportFileError(ConnectorError):
    """A retailer file (shoppers, catalog) has a bad row; nothing of the file was applied."""

    def __init__(self, path: str, problems: list[str]) -> None:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: nothing was imported; {len(problems)} bad row(s):\n{shown}{more}")
        self.problems = problems
