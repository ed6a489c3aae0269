"""user-state: fold profile, preference, device and API-key updates into tables.

One agent per state topic; each only copies the latest value into its table,
so a rebuilt table is exactly what the compacted topic holds.
"""

from __future__ import annotations

from faust.types import StreamT

from pipeline.app import app
from pipeline.topology import user_key
from schemas.records import ApiKey, DeviceSet, DeviceToken, Preferences, UserProfile
from tables.api_keys import api_keys
from tables.devices import devices
from tables.preferences import preferences
from tables.profiles import profiles


def with_device(current: DeviceSet | None, update: DeviceToken) -> DeviceSet:
    """The user's device set after one device update (add, refresh or deactivate)."""
    known = dict(current.devices) if current else {}
    known[update.token] = update
    return DeviceSet(devices=known)


@app.agent(app.topology.profiles, name="state.profiles")
async def profile_updates(stream: StreamT[UserProfile]) -> None:
    """Keep the profiles table equal to the latest profile of every user."""
    async for profile in stream:
        profiles[user_key(profile.tenant, profile.user_id)] = profile


@app.agent(app.topology.preferences, name="state.preferences")
async def preference_updates(stream: StreamT[Preferences]) -> None:
    """Keep the preferences table equal to the latest preferences of every user."""
    async for prefs in stream:
        preferences[user_key(prefs.tenant, prefs.user_id)] = prefs


@app.agent(app.topology.devices, name="state.devices")
async def device_updates(stream: StreamT[DeviceToken]) -> None:
    """Fold device registrations and removals into each user's device set."""
    async for device in stream:
        key = user_key(device.tenant, device.user_id)
        devices[key] = with_device(devices.get(key), device)


@app.agent(app.topology.api_keys, name="state.api_keys")
async def api_key_updates(stream: StreamT[ApiKey]) -> None:
    """Keep the global API keys table equal to the keys topic."""
    async for key in stream:
        api_keys[key.key_id] = key
