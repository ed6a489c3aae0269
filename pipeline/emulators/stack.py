"""Every provider emulator on loopback, and the worker settings that point at them.

The stack runs its emulators on an event loop in a thread of its own, so a
synchronous caller (``make run``, pytest fixtures) can start it, read its
call logs, turn its fault knobs while a worker talks to it, and stop it. It
makes the credentials a real deployment would be given: an APNs signing key,
a Firebase service account, a test CA for APNs' TLS, a SendGrid key and
webhook-signing key, a Twilio account.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pipeline.emulators.apns import ApnsEmulator, ProviderKey
from pipeline.emulators.ca import TestCA
from pipeline.emulators.fcm import FcmEmulator, ServiceAccountKey
from pipeline.emulators.sendgrid import SendGridEmulator
from pipeline.emulators.smtp import SmtpEmulator
from pipeline.emulators.twilio import TwilioEmulator

T = TypeVar("T")

BUNDLE_ID = "com.example.notify"
FCM_PROJECT = "notify-dev"
TWILIO_FROM = "+15005550006"


class EmulatorStack:
    """The five emulators, started and stopped together."""

    def __init__(self, directory: Path, callback_base: str | None = None) -> None:
        """``callback_base``: the worker's URL, where receipts are posted."""
        self.directory = directory
        self.callback_base = callback_base.rstrip("/") if callback_base else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="emulators", daemon=True
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = TestCA.create(directory / "ca")
        cert, key = self.ca.issue_server_cert()
        self.apns_key = ProviderKey.generate()
        self.apns_key_file = directory / f"AuthKey_{self.apns_key.key_id}.p8"
        self.apns_key_file.write_text(self.apns_key.private_key_pem)
        self.apns = ApnsEmulator.for_key(self.apns_key, BUNDLE_ID, cert, key)
        self.fcm_key = ServiceAccountKey.generate(FCM_PROJECT)
        self.fcm = FcmEmulator.for_key(self.fcm_key)
        self.smtp = SmtpEmulator()
        self.sendgrid_key = "SG." + secrets.token_urlsafe(32)
        self.sendgrid = SendGridEmulator(
            self.sendgrid_key,
            webhook_url=(
                f"{self.callback_base}/v1/webhooks/sendgrid"
                if self.callback_base
                else None
            ),
        )
        self.twilio_sid = "AC" + secrets.token_hex(16)
        self.twilio_token = secrets.token_hex(16)
        self.twilio = TwilioEmulator(self.twilio_sid, self.twilio_token)
        self.service_account_file = directory / "firebase-service-account.json"

    @property
    def emulators(self) -> dict[str, Any]:
        """Each emulator by provider name."""
        return {
            "apns": self.apns,
            "fcm": self.fcm,
            "smtp": self.smtp,
            "sendgrid": self.sendgrid,
            "twilio": self.twilio,
        }

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coroutine`` on the stack's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> EmulatorStack:
        """Start the loop and every emulator on a free loopback port."""
        self._thread.start()
        for emulator in self.emulators.values():
            self.run(emulator.start())
        self.fcm_key.write(self.service_account_file, self.fcm.token_uri)
        return self

    def stop(self) -> None:
        """Stop every emulator and the loop; a stack not running is left alone."""
        # A stopped loop never runs what run() hands it: each stop would wait
        # out run()'s timeout instead.
        if not self._loop.is_running():
            return
        for emulator in self.emulators.values():
            try:
                self.run(emulator.stop())
            except Exception:  # noqa: BLE001, S110 - stop the others regardless
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def env(self) -> dict[str, str]:
        """The NOTIFY_* settings a worker needs to send through these emulators."""
        return {
            "NOTIFY_APNS_URL": self.apns.url,
            "NOTIFY_APNS_KEY_FILE": str(self.apns_key_file),
            "NOTIFY_APNS_KEY_ID": self.apns_key.key_id,
            "NOTIFY_APNS_TEAM_ID": self.apns_key.team_id,
            "NOTIFY_APNS_TOPIC": BUNDLE_ID,
            "NOTIFY_APNS_CA_FILE": str(self.ca.ca_path),
            "NOTIFY_FCM_URL": self.fcm.url,
            "NOTIFY_FCM_SERVICE_ACCOUNT": str(self.service_account_file),
            "NOTIFY_SMTP_URL": self.smtp.url,
            "NOTIFY_SENDGRID_URL": self.sendgrid.url,
            "NOTIFY_SENDGRID_API_KEY": self.sendgrid_key,
            "NOTIFY_SENDGRID_WEBHOOK_KEY": self.sendgrid.public_key,
            "NOTIFY_TWILIO_URL": self.twilio.url,
            "NOTIFY_TWILIO_ACCOUNT_SID": self.twilio_sid,
            "NOTIFY_TWILIO_AUTH_TOKEN": self.twilio_token,
            "NOTIFY_TWILIO_FROM": TWILIO_FROM,
        }

    def delivered(self) -> dict[str, int]:
        """Calls answered as delivered, per provider."""
        return {name: e.calls.delivered for name, e in self.emulators.items()}

    def duplicates(self) -> dict[str, int]:
        """Duplicate deliveries (same message id and target), per provider."""
        return {name: e.calls.duplicates for name, e in self.emulators.items()}

    def reset_faults(self) -> None:
        """Every emulator back to well-behaved."""
        for emulator in self.emulators.values():
            emulator.faults.reset()
