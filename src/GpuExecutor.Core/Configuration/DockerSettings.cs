namespace GpuExecutor.Configuration;

public sealed record DockerSettings
{
    /// <summary>unix:///path or tcp://host:port. API version is negotiated (dockerd 20.10 speaks 1.41).</summary>
    public string Endpoint { get; init; } = "unix:///var/run/docker.sock";
}
