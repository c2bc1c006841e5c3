"""Feed sources and the (synchronous) feed fetcher."""

import os
import xml.etree.ElementTree as ET

import requests

FEEDS_BASE = os.environ.get("FEEDS_BASE", "http://127.0.0.1:8002").rstrip("/")
SOURCES = ["world", "business", "technology", "science", "sports"]


def feed_url(source: str) -> str:
    return "%s/feeds/%s.xml" % (FEEDS_BASE, source)


def fetch_feed(source: str) -> dict:
    """Download and parse one RSS feed. Blocking: call it from a worker thread."""
    response = requests.get(feed_url(source), timeout=60)
    response.raise_for_status()
    channel = ET.fromstring(response.content).find("channel")
    items = [
        {"title": item.findtext("title"), "link": item.findtext("link"), "published": item.findtext("pubDate")}
        for item in channel.iter("item")
    ]
    return {"source": source, "items": items}
