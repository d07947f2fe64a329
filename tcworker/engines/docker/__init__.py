"""The docker engine and everything only it uses: images, containers, container options, archives."""
