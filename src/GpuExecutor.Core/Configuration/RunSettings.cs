namespace GpuExecutor.Configuration;

public sealed record RunSettings
{
    /// <summary>
    /// After SIGTERM, how long the stage's processes inside the container get between the
    /// graceful signal and SIGKILL. Keep it below the runner's graceful_kill_timeout (600 s).
    /// </summary>
    public TimeSpan StopGracePeriod { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The signal sent first on cancel or timeout.</summary>
    public string StopSignal { get; init; } = "TERM";

    /// <summary>
    /// The runner's graceful_kill_timeout (its SIGTERM-to-SIGKILL wait for this process), which
    /// the executor cannot read: the stop grace period plus the final checkpoint commit must fit in it.
    /// </summary>
    public TimeSpan RunnerGracefulKillTimeout { get; init; } = TimeSpan.FromSeconds(600);

    /// <summary>
    /// When the Docker daemon stops answering while `run` follows a stage (a restart), how long
    /// `run` waits for it to come back and follow the same stage again; zero fails at once.
    /// </summary>
    public TimeSpan DaemonReconnectWait { get; init; } = TimeSpan.FromSeconds(300);
}
