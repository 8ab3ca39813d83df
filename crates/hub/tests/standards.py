"""Checks a running hub's STIX 2.1 and TAXII 2.1 views with the OASIS tools.

Usage: standards.py BASE_URL API_KEY EXPECTED_REPORT_IDS_COMMA_SEPARATED

Driven by standards.rs. Fetches the whole collection through taxii2-client (discovery, API
root, collections, paged objects and manifest, single objects, versions, a refused write),
validates every object and the /v1/stix bundle with stix2-validator, and exits non-zero on
any error. Warnings (best-practice "SHOULD"s) are printed, not fatal.
"""

import json
import sys

import requests
import stix2validator
from taxii2client.exceptions import AccessError
from taxii2client.v21 import Server, as_pages

failures = []


def fail(message):
    failures.append(message)
    print("FAIL:", message)


def validate(what, instance):
    results = stix2validator.validate_parsed_json(
        instance, stix2validator.ValidationOptions(version="2.1")
    )
    for result in results if isinstance(results, list) else [results]:
        for error in result.errors or []:
            fail("%s: %s" % (what, error))
        for warning in result.warnings or []:
            print("warning: %s: %s" % (what, warning))
        if not result.is_valid:
            fail("%s is not valid STIX 2.1" % what)


def self_check():
    """The validator must refuse a broken indicator, or passing means nothing."""
    broken = {
        "type": "indicator", "spec_version": "2.1",
        "id": "indicator--6f1c1f0e-1d7b-4f2e-8a6b-1c2d3e4f5a6d",
        "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z",
        "pattern": "[ipv4-addr:value = '1.2.3.4'", "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z",
    }
    result = stix2validator.validate_parsed_json(
        broken, stix2validator.ValidationOptions(version="2.1")
    )
    if result.is_valid:
        fail("stix2-validator accepted a broken pattern: it does not validate anything")


def main():
    base, key, expected = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    self_check()

    server = Server(base + "/taxii2/", user="any-user", password=key)
    if len(server.api_roots) != 1:
        fail("expected one API root, got %d" % len(server.api_roots))
    root = server.api_roots[0]
    if "application/taxii+json;version=2.1" not in root.versions:
        fail("the API root does not offer TAXII 2.1: %r" % root.versions)
    if len(root.collections) != 1:
        fail("expected one collection, got %d" % len(root.collections))
    collection = root.collections[0]
    if not collection.can_read or collection.can_write:
        fail("the collection should be readable and read-only")

    objects = []
    pages = 0
    for envelope in as_pages(collection.get_objects, per_request=7):
        pages += 1
        page = envelope.get("objects", [])
        if len(page) > 7:
            fail("a page of limit 7 held %d objects" % len(page))
        ids = [o["id"] for o in page]
        if len(ids) != len(set(ids)):
            fail("a page repeats an object")
        objects.extend(page)
    if pages < 3:
        fail("expected several pages, got %d" % pages)
    print("objects: %d in %d pages" % (len(objects), pages))

    manifest = []
    for envelope in as_pages(collection.get_manifest, per_request=7):
        manifest.extend(envelope.get("objects", []))
    if [m["id"] for m in manifest] != [o["id"] for o in objects]:
        fail("the manifest does not list the objects in the same order")
    for record, obj in zip(manifest, objects):
        if record["version"] != obj["modified"]:
            fail("manifest version of %s differs from its modified" % obj["id"])

    by_type = {}
    for obj in objects:
        validate(obj["id"], obj)
        by_type.setdefault(obj["type"], []).append(obj)
    for kind in ("attack-pattern", "identity", "indicator", "relationship", "sighting"):
        if kind not in by_type:
            fail("no %s object in the collection" % kind)
    for report_id in expected:
        sightings = [o for o in by_type.get("sighting", []) if report_id in o["description"]]
        if len(sightings) != 1:
            fail("report %s has %d sightings in the collection" % (report_id, len(sightings)))

    unique = {o["id"]: o for o in objects}
    validate("the collection as one bundle", {
        "type": "bundle",
        "id": "bundle--6f1c1f0e-1d7b-4f2e-8a6b-1c2d3e4f5a6b",
        "objects": list(unique.values()),
    })

    for kind in ("indicator", "sighting", "relationship", "identity", "attack-pattern"):
        sample = by_type[kind][0]
        got = collection.get_object(sample["id"]).get("objects", [])
        if got != [sample]:
            fail("get_object(%s) answered %r" % (sample["id"], got))
        versions = collection.object_versions(sample["id"]).get("versions", [])
        if versions != [sample["modified"]]:
            fail("object_versions(%s) answered %r" % (sample["id"], versions))

    only = collection.get_objects(type="indicator").get("objects", [])
    if not only or any(o["type"] != "indicator" for o in only):
        fail("match[type]=indicator answered other types")

    try:
        collection.add_objects({"type": "bundle", "objects": []})
        fail("taxii2-client wrote to a collection that says can_write false")
    except AccessError:
        pass  # the client itself refuses: the collection says it is read-only
    response = requests.post(
        collection.objects_url,
        auth=("any-user", key),
        headers={
            "Accept": "application/taxii+json;version=2.1",
            "Content-Type": "application/taxii+json;version=2.1",
        },
        data=json.dumps({"objects": []}),
    )
    if response.status_code != 403:
        fail("a write answered %d, not 403" % response.status_code)

    response = requests.get(
        base + "/v1/stix", params={"limit": 500}, headers={"Authorization": "Bearer " + key}
    )
    if response.status_code != 200:
        fail("GET /v1/stix answered %d" % response.status_code)
    else:
        bundle = response.json()
        validate("the /v1/stix bundle", bundle)
        for report_id in expected:
            if not any(o["type"] == "sighting" and report_id in o["description"]
                       for o in bundle["objects"]):
                fail("report %s is not in the bundle" % report_id)

    print(json.dumps({"objects": len(objects), "failures": len(failures)}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
