# checks.x86_64-linux.images-vm: the images as users run them. A NixOS VM with Docker (as
# nixpkgs' own nixos/tests/docker-tools.nix) loads every image with `load-images`, starts the
# default stack of docker-compose.yml unchanged, places an order through order-service and waits
# until the worker completed it and notification-service notified it. The builder needs KVM
# (requiredSystemFeatures "kvm" and "nixos-test"): without it the check cannot run.
{
  pkgs,
  load-images,
}:
let
  order = pkgs.writeText "order.json" (
    builtins.toJSON {
      customer_email = "vm@example.com";
      items = [
        {
          sku = "VM-1";
          quantity = 2;
          unit_price = "9.99";
        }
      ];
    }
  );
in
pkgs.testers.runNixOSTest {
  name = "celery-stack-images";

  nodes.machine = {
    virtualisation = {
      docker.enable = true;
      diskSize = 4096;
      memorySize = 2048;
      cores = 2;
    };
    environment.systemPackages = [
      pkgs.docker-compose
      pkgs.curl
      pkgs.jq
    ];
  };

  testScript = ''
    machine.wait_for_unit("docker.service")
    machine.succeed("${pkgs.lib.getExe load-images}")
    machine.succeed("mkdir -p /srv/stack && cp ${../docker-compose.yml} /srv/stack/docker-compose.yml")
    # The API's key, as the README's first run makes it.
    machine.succeed("echo ORDER_API_KEYS=vm-test-key-0123456789 > /srv/stack/.env")
    key = "Authorization: Bearer vm-test-key-0123456789"
    machine.succeed("cd /srv/stack && docker-compose up -d --wait --wait-timeout 180")

    location = machine.succeed(
        "curl -sf -D - -o /dev/null -X POST http://127.0.0.1:8000/orders "
        f"-H '{key}' -H 'Content-Type: application/json' -d @${order} "
        "| tr -d '\\r' | sed -n 's/^[Ll]ocation: //p'"
    ).strip()
    assert location, "order-service answered without a Location"

    # Completed by the worker, then notified by notification-service.
    machine.wait_until_succeeds(
        f"curl -sf -H '{key}' http://127.0.0.1:8000{location}"
        " | jq -e '.status == \"completed\" and .notification == \"sent\"'",
        timeout=120,
    )
    print(machine.succeed(f"curl -sf -H '{key}' http://127.0.0.1:8000{location}"))
    machine.succeed("cd /srv/stack && docker-compose down")
  '';
}
