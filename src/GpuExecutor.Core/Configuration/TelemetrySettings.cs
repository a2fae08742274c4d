namespace GpuExecutor.Configuration;

/// <summary>[telemetry]: what is recorded of a job's GPUs while it holds them.</summary>
public sealed record TelemetrySettings
{
    /// <summary>How often the job's GPUs are sampled (one nvidia-smi call for all of them); zero turns sampling off.</summary>
    public TimeSpan GpuSampleInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A GPU whose utilisation stays under this for most of the job gets a loud warning in the job log.</summary>
    public int IdleUtilizationPercent { get; init; } = 10;
}
