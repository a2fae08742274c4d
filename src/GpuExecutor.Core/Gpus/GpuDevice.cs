namespace GpuExecutor.Gpus;

/// <summary>One GPU as nvidia-smi reports it. Numbers nvidia-smi gives as [N/A] are null.</summary>
public sealed record GpuDevice(
    int Index,
    string Uuid,
    string Name,
    long? MemoryTotalMiB,
    long? MemoryUsedMiB,
    int? UtilizationPercent,
    bool MigEnabled);
