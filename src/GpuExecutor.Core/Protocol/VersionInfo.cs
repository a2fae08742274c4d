namespace GpuExecutor.Protocol;

/// <summary>What config tells the runner about this executor (shown in the job log), and `version` prints.</summary>
public static class VersionInfo
{
    public const string Version = "0.1.0";
    public const string DriverName = "gpu-executor";
}
