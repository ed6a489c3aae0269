"""Senders from settings: the one place provider settings become clients.

A provider is configured when its endpoint setting is set; a channel gets its
configured providers in order of preference (email: NOTIFY_EMAIL_PROVIDERS).
"""

from __future__ import annotations

from pipeline.providers.apns import ApnsSender
from pipeline.providers.base import Sender
from pipeline.providers.fcm import FcmSender
from pipeline.providers.sendgrid import SendGridSender
from pipeline.providers.smtp import SmtpSender
from pipeline.providers.twilio import TwilioSender
from pipeline.settings import Settings


def push_senders(settings: Settings) -> list[Sender]:
    """APNs and FCM, those configured."""
    senders: list[Sender] = []
    if settings.apns_url:
        if settings.apns_key_file is None:
            raise ValueError("NOTIFY_APNS_KEY_FILE is required with NOTIFY_APNS_URL")
        senders.append(
            ApnsSender(
                team_id=settings.apns_team_id,
                key_id=settings.apns_key_id,
                signing_key=settings.apns_key_file,
                bundle_id=settings.apns_topic,
                base_url=settings.apns_url,
                timeout=settings.provider_timeout,
                ca_file=settings.apns_ca_file,
            )
        )
    if settings.fcm_url:
        if settings.fcm_service_account is None:
            raise ValueError(
                "NOTIFY_FCM_SERVICE_ACCOUNT is required with NOTIFY_FCM_URL"
            )
        senders.append(
            FcmSender(
                service_account=settings.fcm_service_account,
                base_url=settings.fcm_url,
                timeout=settings.provider_timeout,
            )
        )
    return senders


def email_senders(settings: Settings) -> list[Sender]:
    """SMTP and SendGrid, those configured, primary first."""
    senders: list[Sender] = []
    for name in settings.email_order:
        if name == "smtp" and settings.smtp_url:
            senders.append(
                SmtpSender(
                    settings.smtp_url,
                    settings.email_from,
                    username=settings.smtp_username or None,
                    password=settings.smtp_password.get_secret_value() or None,
                    starttls=settings.smtp_starttls,
                    timeout=settings.provider_timeout,
                )
            )
        elif name == "sendgrid" and settings.sendgrid_url:
            senders.append(
                SendGridSender(
                    settings.sendgrid_api_key.get_secret_value(),
                    settings.email_from,
                    base_url=settings.sendgrid_url,
                    timeout=settings.provider_timeout,
                )
            )
    return senders


def sms_senders(settings: Settings) -> list[Sender]:
    """Twilio, if configured."""
    if not settings.twilio_url:
        return []
    sender = settings.twilio_from
    service = sender if sender.startswith("MG") else None
    return [
        TwilioSender(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            from_number=None if service else sender,
            messaging_service_sid=service,
            status_callback=settings.public_base + "/v1/webhooks/twilio",
            base_url=settings.twilio_url,
            timeout=settings.provider_timeout,
            max_segments=settings.sms_max_segments,
        )
    ]


def senders_from_settings(settings: Settings) -> dict[str, list[Sender]]:
    """Every configured sender, by channel (in-app needs none: it is the inbox)."""
    return {
        "push": push_senders(settings),
        "email": email_senders(settings),
        "sms": sms_senders(settings),
    }
