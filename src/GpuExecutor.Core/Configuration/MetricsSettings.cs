namespace GpuExecutor.Configuration;

/// <summary>[metrics]: the host's Prometheus textfile, for node_exporter's textfile collector.</summary>
public sealed record MetricsSettings
{
    /// <summary>
    /// The directory node_exporter's textfile collector reads (Debian's prometheus-node-exporter:
    /// /var/lib/prometheus/node-exporter). Null: no metrics are written, and no counters kept.
    /// </summary>
    public string? TextfileDir { get; init; }
}
