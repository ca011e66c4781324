"""Build TEST STAND-IN images under the exact names and tags of nix/images.toml.

These images are NOT the product images. The product images are the Nix ones
(nix/images.nix, dockerTools.buildLayeredImage). This machine cannot run Nix builds or pull
images from a container registry, so tests/container builds look-alikes from Debian packages
and the project's own wheels, close enough for the compose tests to exercise the real
docker-compose.yml:

* base: ``debootstrap --variant=minbase trixie`` (mirror read from this machine's apt
  configuration at run time) with Debian's python3 (3.13, the minor nixpkgs 26.05 builds the
  images with) or redis-server + redis-cli, cached as a tarball and ``docker import``-ed;
* Python services: wheels built on the host (``pip wheel`` for ./common ./worker
  ./order-service ./notification-service); an image with ``requirements`` (flower) gets those
  distributions instead; each image's third-party closure resolved by
  ``uv pip compile`` with every version forced to requirements.lock's (the versions nixpkgs 26.05
  ships, nix/nixpkgs-versions.toml), fetched as manylinux wheels for the image's interpreter and
  installed inside the build with ``pip --no-index --no-deps`` (no network used inside containers);
* like the Nix images: non-root user ``app`` (uid/gid from images.toml), /tmp mode 1777, the
  console script on PATH under /bin and as Entrypoint, the same Env and WorkingDir, and no
  shell: /bin/sh, dash and bash are removed in the final step (set STANDIN_KEEP_SHELL=1 to keep
  them for debugging). The removed files still exist in lower layers (whiteouts), which does
  not matter for tests.

Differences that remain: Debian userland files (coreutils etc.) are present, python3 is
Debian's 3.13 rather than nixpkgs' (another patch level), and the layers are not
content-addressed by Nix.

Usage: python3 tests/container/standin_images.py [--only worker,redis] [--no-cache]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES_TOML = REPO / "nix" / "images.toml"
CACHE = Path(os.environ.get("CELERY_STACK_CACHE", "/var/cache/celery-stack-tests"))
SUITE = "trixie"
# The repository's distributions: every top-level folder whose pyproject.toml has a [project] table.
PY_PACKAGE_DIRS = sorted(
    path.parent.name for path in REPO.glob("*/pyproject.toml") if "project" in tomllib.loads(path.read_text())
)
STANDIN_LABEL = "org.celery-stack.standin"

# Rootfs flavours: debootstrap --include lists. Changing a list changes the cache key.
ROOTFS = {
    "python": ["python3", "python3-venv"],
    "redis": ["redis-server", "redis-tools"],
}

TIMINGS: list[tuple[str, float]] = []


def log(msg: str) -> None:
    print(msg, flush=True)


class timed:
    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        self.t0 = time.monotonic()
        log(f"==> {self.what}")
        return self

    def __exit__(self, *exc):
        dt = time.monotonic() - self.t0
        TIMINGS.append((self.what, dt))
        log(f"    [timing] {self.what:<44} {dt:6.1f}s")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def debian_mirror() -> str:
    """The first non-security `deb` URI configured on this machine (deb822 or one-line)."""
    srcdir = Path("/etc/apt/sources.list.d")
    for f in sorted(srcdir.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.lstrip().startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            suites = fields.get("suites", "")
            if not suites or "security" in suites or not fields.get("uris"):
                continue
            return fields["uris"].split()[0].rstrip("/")
    for f in [Path("/etc/apt/sources.list"), *sorted(srcdir.glob("*.list"))]:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            parts = line.split()
            if not parts or parts[0] != "deb":
                continue
            parts = parts[1:]
            if parts and parts[0].startswith("["):
                while parts and not parts[0].endswith("]"):
                    parts = parts[1:]
                parts = parts[1:]
            if len(parts) >= 2 and "security" not in parts[1]:
                return parts[0].rstrip("/")
    raise SystemExit("no Debian mirror found in /etc/apt")


def docker_image_exists(ref: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode
        == 0
    )


def base_image(flavour: str, no_cache: bool) -> str:
    """debootstrap (cached tarball) + docker import; returns the image reference."""
    includes = ROOTFS[flavour]
    arch = run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    key = hashlib.sha256(json.dumps([SUITE, "minbase", arch, includes]).encode()).hexdigest()[:12]
    ref = f"celery-stack-standin/base-{flavour}:{key}"
    tarball = CACHE / "rootfs" / f"{SUITE}-minbase-{flavour}-{key}.tar"
    if not no_cache and docker_image_exists(ref):
        log(f"    {ref} present (cached)")
        return ref
    if no_cache or not tarball.exists():
        mirror = debian_mirror()
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
            root = Path(tmp) / "root"
            log(f"    debootstrap --variant=minbase --include={','.join(includes)} {SUITE} (configured mirror)")
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--arch={arch}",
                    f"--include={','.join(includes)}",
                    SUITE,
                    str(root),
                    mirror,
                ],
                stdout=subprocess.DEVNULL,
            )
            # Trim what an image does not need: package caches and apt lists.
            for p in ["var/cache/apt/archives", "var/lib/apt/lists"]:
                d = root / p
                for child in d.glob("*"):
                    if child.is_file():
                        child.unlink()
            for p in ["var/log/apt", "var/log/dpkg.log", "var/log/bootstrap.log"]:
                d = root / p
                if d.is_dir():
                    shutil.rmtree(d)
                elif d.exists():
                    d.unlink()
            # A container gets its hostname/resolv.conf/hosts from the engine.
            partial = Path(str(tarball) + ".partial")
            run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."])
            partial.rename(tarball)
    run(
        [
            "docker",
            "import",
            "--change",
            f"LABEL {STANDIN_LABEL}=base",
            str(tarball),
            ref,
        ],
        stdout=subprocess.DEVNULL,
    )
    log(f"    imported {ref} ({tarball.stat().st_size / 1e6:.0f} MB tarball)")
    return ref


LOCAL_DISTS = {
    re.sub(r"[-_.]+", "-", tomllib.loads((REPO / d / "pyproject.toml").read_text())["project"]["name"]).lower()
    for d in PY_PACKAGE_DIRS
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path) -> list[str]:
    """Requires-Dist lines of a wheel (no extras-only markers), from its METADATA."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if "extra ==" in req:
                continue
            reqs.append(req)
    return reqs


def build_python() -> str:
    """A cached venv with the build backend, so project wheels build without isolation (fast)."""
    venv = CACHE / f"build-venv-py{sys.version_info[0]}.{sys.version_info[1]}"
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)], stdout=subprocess.DEVNULL)
        run([str(py), "-m", "pip", "install", "-q", "hatchling", "editables"], stdout=subprocess.DEVNULL)
        (venv / ".complete").touch()
    return str(py)


def pip(args: list[str]) -> None:
    r = subprocess.run([build_python(), "-m", "pip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        log(r.stdout[-6000:])
        log(r.stderr[-6000:])
        raise SystemExit(f"pip {args[0]} failed")


def image_python(base: str) -> tuple[str, str]:
    """(python version, glibc minor) of the base image's interpreter; a throwaway container."""
    code = "import platform; print(platform.python_version()); print(platform.libc_ver()[1])"
    out = run(
        ["docker", "run", "--rm", "--network", "none", base, "/usr/bin/python3", "-c", code],
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[0], out[1]


def locked_pins() -> list[str]:
    """Every pin of requirements.lock as `name==version ; marker`: the marker stays, since an
    override replaces a dependency's requirement whole (markers included)."""
    pins = []
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*==[^\s;\\]+)\s*(;[^\\]+)?", line)
        if match:
            pins.append(match[1] + (f" {match[2].strip()}" if match[2] else ""))
    return pins


def service_closure(requirements: list[str], py_version: str) -> list[str]:
    """The exact third-party distributions `requirements` need on the image's interpreter, every
    version forced to requirements.lock's (an override, as nixpkgs ignores kombu's bound on redis)."""
    with tempfile.TemporaryDirectory() as tmp:
        reqs, overrides = Path(tmp) / "requirements.in", Path(tmp) / "overrides.txt"
        reqs.write_text("\n".join(requirements) + "\n")
        overrides.write_text("\n".join(locked_pins()) + "\n")
        out = run(
            ["uv", "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python-version", py_version,
             "--python-platform", "linux", "--override", str(overrides), str(reqs)],
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip
    return [line.strip() for line in out.splitlines() if re.match(r"^[A-Za-z0-9]", line)]


def build_wheels(
    wheel_dir: Path,
    base: str,
    services: dict[str, str],
    requirements: dict[str, list[str]],
    no_cache: bool = False,
) -> dict[str, list[str]]:
    """Project wheels from the source tree + their third-party dependencies at the locked versions.

    Returns, per package of `services` (images.toml key -> package), the wheel file names its image
    installs; a package with `requirements` (images.toml: flower) installs those third-party
    distributions. The project's own distributions are never looked up on the index: names such as
    `worker` exist on PyPI and belong to someone else.
    """
    machine = platform.machine()
    py_version, glibc = image_python(base)
    glibc_minor = int(glibc.split(".")[1])
    log(f"    image interpreter: CPython {py_version}, glibc {glibc}")
    local = [str(REPO / d) for d in PY_PACKAGE_DIRS]
    pip(["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), *local])
    project = {_canonical(whl.name.split("-")[0]): whl for whl in wheel_dir.glob("*.whl")}

    def local_closure(dist: str) -> list[str]:
        """`dist` and the repository's distributions it requires, recursively."""
        found = [dist]
        for requirement in wheel_requirements(project[dist]):
            name = _canonical(re.split(r"[ ;<>=!~\[]", requirement)[0])
            if name in LOCAL_DISTS and name not in found:
                found += [n for n in local_closure(name) if n not in found]
        return found

    def third_party(dists: list[str]) -> list[str]:
        requirements = [r for d in dists for r in wheel_requirements(project[d])]
        return [r for r in requirements if _canonical(re.split(r"[ ;<>=!~\[]", r)[0]) not in LOCAL_DISTS]

    locals_of = {
        package: [] if package in requirements else local_closure(_canonical(package)) for package in services.values()
    }
    closures = {
        package: service_closure(requirements.get(package) or third_party(dists), py_version)
        for package, dists in locals_of.items()
    }
    pins = sorted({pin for closure in closures.values() for pin in closure})
    log(f"    third-party distributions: {', '.join(pins)}")
    # For the image's interpreter: its glibc decides which manylinux wheels fit. Older pip does not
    # expand manylinux_2_N to the older tags, so every compatible one is listed.
    platforms: list[str] = []
    for minor in range(glibc_minor, 4, -1):
        platforms += ["--platform", f"manylinux_2_{minor}_{machine}"]
    platforms += ["--platform", f"manylinux2014_{machine}", "--platform", f"manylinux2010_{machine}",
                  "--platform", f"manylinux1_{machine}"]  # fmt: skip
    abi = "cp" + "".join(py_version.split(".")[:2])
    download = ["download", "-q", "--no-deps", "--only-binary=:all:", *platforms, "--python-version", py_version,
                "--implementation", "cp", "--abi", abi, "-d", str(wheel_dir)]  # fmt: skip
    # Third-party wheels are cached per (pins, interpreter); the project's are always rebuilt.
    key = hashlib.sha256(json.dumps([pins, py_version, glibc, machine]).encode()).hexdigest()[:12]
    cached = CACHE / "wheelhouse" / key
    if not no_cache and (cached / ".complete").exists():
        log(f"    third-party wheels from cache {cached}")
        for whl in cached.glob("*.whl"):
            shutil.copy2(whl, wheel_dir / whl.name)
    else:
        pip([*download, *pins])
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir(parents=True)
        for whl in wheel_dir.glob("*.whl"):
            if whl not in project.values():
                shutil.copy2(whl, cached / whl.name)
        (cached / ".complete").touch()
    by_name = {_canonical(whl.name.split("-")[0]): whl.name for whl in wheel_dir.glob("*.whl")}
    return {
        package: [by_name[_canonical(pin.split("==")[0])] for pin in closure]
        + [project[dist].name for dist in reversed(locals_of[package])]
        for package, closure in closures.items()
    }


def toml_config() -> dict:
    with IMAGES_TOML.open("rb") as f:
        return tomllib.load(f)


def config_lines(cfg: dict, svc: dict) -> list[str]:
    """Image config as nix/images.nix sets it: User (uid:gid), Entrypoint, Env, ports, labels."""
    # Nix: Env = PATH=/bin, PYTHONUNBUFFERED=1, then images.toml's env. (Here /bin is Debian's
    # merged /usr/bin, which also holds the console script link.)
    env = {"PATH": "/bin", "PYTHONUNBUFFERED": "1", **svc.get("env", {})}
    lines = [f"ENV {k}={json.dumps(str(v))}" for k, v in env.items()]
    lines += [f"EXPOSE {p}" for p in svc.get("ports", [])]
    labels = {
        "org.opencontainers.image.title": svc["name"],
        "org.opencontainers.image.version": cfg["tag"],
        "org.opencontainers.image.description": "TEST STAND-IN built from Debian packages, not the Nix-built image",
        STANDIN_LABEL: "image",
    }
    lines += [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
    lines += [
        f"WORKDIR {svc.get('workdir', '/')}",
        f"USER {cfg['uid']}:{cfg['gid']}",
        f"ENTRYPOINT {json.dumps(['/bin/' + svc['entrypoint']])}",
    ]
    if "cmd" in svc:
        lines.append(f"CMD {json.dumps(svc['cmd'])}")
    return lines


def user_lines(cfg: dict) -> list[str]:
    """The non-root user of images.toml, as fakeNss adds it to the Nix images."""
    uid, gid, user = cfg["uid"], cfg["gid"], cfg["user"]
    return [
        f'RUN ["/usr/sbin/groupadd", "--gid", "{gid}", "{user}"]',
        f'RUN ["/usr/sbin/useradd", "--uid", "{uid}", "--gid", "{gid}", "--no-create-home", '
        f'"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "{user}"]',
    ]


def final_stage(lines: list[str], cfg: dict, svc: dict, keep_shell: bool) -> str:
    """Remove the shell (the Nix images have none) and add the image config; the Dockerfile text."""
    if not keep_shell:
        lines.append('RUN ["/bin/rm", "-f", "/usr/bin/sh", "/usr/bin/dash", "/usr/bin/bash", "/usr/bin/rbash"]')
    lines += config_lines(cfg, svc)
    return "\n".join(lines) + "\n"


def dockerfile_python(base: str, cfg: dict, svc: dict, keep_shell: bool, wheels: list[str]) -> str:
    entry = svc["entrypoint"]
    paths = " ".join(f"/wheels/{name}" for name in wheels)
    lines = [
        "# TEST STAND-IN for the Nix-built product image (nix/images.nix); generated by",
        "# tests/container/standin_images.py. Not a product artefact.",
        f"FROM {base} AS build",
        "COPY wheels /wheels",
        # Build stage may use the shell; the final stage gets none. Exactly the resolved closure.
        f"RUN python3 -m venv /opt/app && /opt/app/bin/pip install -q --no-index --no-deps {paths}"
        " && /opt/app/bin/pip uninstall -q -y pip setuptools",
        "",
        f"FROM {base}",
        "COPY --from=build /opt/app /opt/app",
        *user_lines(cfg),
        # Console script on PATH under /bin (merged /usr: /bin -> /usr/bin), as in the Nix image.
        f'RUN ["/bin/ln", "-s", "/opt/app/bin/{entry}", "/usr/bin/{entry}"]',
        'RUN ["/bin/chmod", "1777", "/tmp"]',
    ]
    return final_stage(lines, cfg, svc, keep_shell)


def dockerfile_redis(base: str, cfg: dict, svc: dict, keep_shell: bool) -> str:
    uid, gid = cfg["uid"], cfg["gid"]
    workdir = svc.get("workdir", "/data")
    lines = [
        "# TEST STAND-IN for the Nix-built redis image (nix/images.nix); Debian's redis-server",
        "# and redis-cli. Generated by tests/container/standin_images.py. Not a product artefact.",
        f"FROM {base}",
        # Debian's redis package owns uid/gid for `redis`; the Nix image runs as app (1000).
        *user_lines(cfg),
        f'RUN ["/bin/mkdir", "-p", "{workdir}"]',
        f'RUN ["/bin/chown", "{uid}:{gid}", "{workdir}"]',
        'RUN ["/bin/chmod", "1777", "/tmp"]',
    ]
    return final_stage(lines, cfg, svc, keep_shell)


def docker_build(ctx: Path, ref: str) -> None:
    env = dict(os.environ)
    # docker.io 20.10 has no buildx plugin: the classic builder is what exists here.
    env.setdefault("DOCKER_BUILDKIT", "0")
    r = subprocess.run(["docker", "build", "--force-rm", "-t", ref, str(ctx)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        log(r.stdout[-6000:])
        log(r.stderr[-6000:])
        raise SystemExit(f"docker build of {ref} failed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma list of images.toml keys to build")
    ap.add_argument("--no-cache", action="store_true", help="redo debootstrap and imports")
    args = ap.parse_args(argv)
    keep_shell = os.environ.get("STANDIN_KEEP_SHELL") == "1"

    cfg = toml_config()
    tag = cfg["tag"]
    services: dict = cfg["images"]
    wanted = [s for s in args.only.split(",") if s] or list(services)
    unknown = set(wanted) - set(services)
    if unknown:
        raise SystemExit(f"unknown image keys: {sorted(unknown)}")
    py_services = [k for k in wanted if services[k]["package"] != "redis"]

    t_all = time.monotonic()
    flavours = (["python"] if py_services else []) + (["redis"] if "redis" in wanted else [])
    # The debootstraps are mostly waiting on downloads and dpkg: run them side by side.
    with timed(f"base images: {', '.join(flavours)} (debootstrap/import, in parallel)"):
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {f: pool.submit(base_image, f, args.no_cache) for f in flavours}
            bases: dict[str, str] = {f: fut.result() for f, fut in futures.items()}

    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        tmp = Path(tmp)
        if py_services:
            wheels = tmp / "wheels"
            wheels.mkdir()
            with timed("wheels (pip wheel + locked manylinux deps)"):
                packages = {key: services[key]["package"] for key in py_services}
                requirements = {
                    services[key]["package"]: services[key]["requirements"]
                    for key in py_services
                    if "requirements" in services[key]
                }
                image_wheels = build_wheels(wheels, bases["python"], packages, requirements, args.no_cache)
                log(f"    {len(list(wheels.glob('*.whl')))} wheels")
        for key in wanted:
            svc = services[key]
            ref = f"{svc['name']}:{tag}"
            with timed(f"image {ref}"):
                ctx = tmp / f"ctx-{key}"
                ctx.mkdir()
                if svc["package"] == "redis":
                    text = dockerfile_redis(bases["redis"], cfg, svc, keep_shell)
                else:
                    shutil.copytree(tmp / "wheels", ctx / "wheels")
                    text = dockerfile_python(bases["python"], cfg, svc, keep_shell, image_wheels[svc["package"]])
                (ctx / "Dockerfile").write_text(text)
                docker_build(ctx, ref)
    # Earlier builds of these images, now untagged (only final stand-in images: the untagged
    # build-stage images stay, they are the layer cache of the next build).
    subprocess.run(
        ["docker", "image", "prune", "--force", "--filter", f"label={STANDIN_LABEL}=image"],
        stdout=subprocess.DEVNULL,
        check=False,
    )
    total = time.monotonic() - t_all
    log("==> timings")
    for what, dt in TIMINGS:
        log(f"    {what:<48} {dt:6.1f}s")
    log(f"    {'total':<48} {total:6.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
