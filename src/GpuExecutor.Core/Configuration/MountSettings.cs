namespace GpuExecutor.Configuration;

/// <summary>A host directory and where it appears inside the job's containers.</summary>
public sealed record MountSettings(string HostDir, string ContainerDir);
