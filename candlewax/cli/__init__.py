"""The ``candlewax`` command: the one place that wires connectors, flows and sinks together.

    candlewax broker   [--engine tansu|noida] [--port N]     embedded Kafka-protocol broker
    candlewax topics ensure                                   create trades/bars/alerts/deadletter
    candlewax replay PATH [--speed X] [--shift-ms N]          recorded traffic or trade files → trades
    candlewax synthetic [--symbols N] [--rate R]              seeded synthetic market → trades
    candlewax connect VENUE --symbols A,B                     live venue websocket → trades
    candlewax record VENUE --symbols A,B --out DIR            live venue websocket → hourly .gz
    candlewax flow [--exit-when-done] [-w N -i I -a ADDRS]    the Bytewax bars dataflow (a cluster)
    candlewax recovery init DIR                               the flow's crash-recovery store
    candlewax backtest --from T --to T --out DIR              replay a time range, with a report
    candlewax bars tail | alerts tail                         print the bars / alerts topic
    candlewax notify [--console] [--from-beginning]           alerts → Telegram, WeCom, webhooks
    candlewax serve [--host H] [--port N]                     the market-data gateway and chart page
    candlewax demo [--replay PATH] [--exit-when-done]         all of the above, one command

Settings come from ``--config FILE`` < ``CANDLEWAX_*`` environment < flags, checked once
(:mod:`candlewax.settings`). Parsing lives in :mod:`candlewax.cli.parser`, the commands in
:mod:`~candlewax.cli.commands`, :mod:`~candlewax.cli.flow` and :mod:`~candlewax.cli.demo`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException

from candlewax.cli import commands
from candlewax.cli.demo import cmd_demo
from candlewax.cli.flow import cmd_flow
from candlewax.cli.parser import build_parser as _build
from candlewax.errors import CandlewaxError
from candlewax.logs import SECRETS, setup_logging

log = logging.getLogger("candlewax")

COMMANDS = {
    "broker": commands.cmd_broker,
    "topics": commands.cmd_topics,
    "connect": commands.cmd_connect,
    "record": commands.cmd_record,
    "replay": commands.cmd_replay,
    "synthetic": commands.cmd_synthetic,
    "flow": cmd_flow,
    "backtest": commands.cmd_backtest,
    "recovery_init": commands.cmd_recovery_init,
    "bars_tail": commands.cmd_bars_tail,
    "alerts_tail": commands.cmd_alerts_tail,
    "notify": commands.cmd_notify,
    "serve": commands.cmd_serve,
    "demo": cmd_demo,
}


def build_parser() -> argparse.ArgumentParser:
    return _build(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except CandlewaxError as exc:
        _error(str(exc), args.log_level)
        return 1
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        _error(
            f"Kafka: {text} (check --bootstrap-servers and the kafka properties)", args.log_level
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        _error(
            f"internal error: {type(exc).__name__}: {exc} — please report it; "
            "--log-level DEBUG shows the traceback",
            args.log_level,
        )
        return 70


def _error(message: str, level: str) -> None:
    """One line on stderr, secrets masked; the traceback too at --log-level DEBUG."""
    if level.upper() == "DEBUG":
        log.debug("the error's traceback:", exc_info=True)
    print(f"candlewax: error: {SECRETS.redact(message)}", file=sys.stderr)
