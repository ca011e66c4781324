{
  description = "celery-stack: order-service, worker and notification-service on Celery + Redis";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { nixpkgs, ... }:
    let
      forAllSystems = nixpkgs.lib.genAttrs [
        "x86_64-linux"
        "aarch64-linux"
      ];

      # Everything for one system; each concern lives in its own file under nix/.
      perSystem =
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          pythonPackages = import ./nix/python-packages.nix { inherit pkgs; };
          images = import ./nix/images.nix { inherit pkgs pythonPackages; };
          kubernetes = import ./nix/kubernetes.nix { inherit pkgs; };
        in
        {
          packages = pythonPackages.packages // images.packages // kubernetes.packages;
          apps = images.apps;
          checks = import ./nix/checks.nix { inherit pkgs pythonPackages images; } // kubernetes.packages;
          devShells.default = import ./nix/dev-shell.nix { inherit pkgs pythonPackages; };
          # `nix fmt` formats every .nix file of the tree (nixfmt through treefmt).
          formatter = pkgs.nixfmt-tree;
        };

      outputsBySystem = forAllSystems perSystem;
      collect = name: forAllSystems (system: outputsBySystem.${system}.${name});
    in
    {
      packages = collect "packages";
      apps = collect "apps";
      checks = collect "checks";
      devShells = collect "devShells";
      formatter = collect "formatter";
    };
}
