using CliWrap;
using CliWrap.Buffered;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Gpus;

/// <summary>Runs nvidia-smi (through CliWrap, as an argument list: no shell) and parses what it prints.</summary>
public sealed class NvidiaSmi(string program) : IGpuInventory
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(60);

    public async Task<IReadOnlyList<GpuDevice>> QueryAsync(CancellationToken cancellationToken)
    {
        var output = await RunAsync(NvidiaSmiQuery.Arguments, cancellationToken);
        try
        {
            return NvidiaSmiQuery.Parse(output);
        }
        catch (FormatException error)
        {
            throw new SystemFailureException($"could not read the GPU inventory from '{program}': {error.Message}", error);
        }
    }

    /// <summary>
    /// The link matrix; <see cref="GpuTopology.Unknown"/> when nvidia-smi cannot give one. With a
    /// <paramref name="cacheDirectory"/>, the matrix is read once per boot and set of GPUs: it is
    /// wiring, and `topo -m` cost 36 to 112 ms live (Fixtures/nvidia-smi/*.live.check.log), more
    /// than the rest of an allocation decision.
    /// </summary>
    public async Task<GpuTopology> TopologyAsync(IReadOnlyList<GpuDevice> inventory, string? cacheDirectory, Action<string> log, CancellationToken cancellationToken)
    {
        var cache = cacheDirectory is null ? null : TopologyCache.For(cacheDirectory, program, inventory);
        if (cache?.TryRead() is { } cached)
            return cached;
        try
        {
            var output = await RunAsync(["topo", "-m"], cancellationToken);
            var topology = GpuTopology.Parse(output);
            cache?.Write(output, log);
            return topology;
        }
        catch (Exception error) when (error is SystemFailureException or FormatException)
        {
            log($"WARNING: GPU topology unknown, choosing GPUs by index: {error.Message}");
            return GpuTopology.Unknown;
        }
    }

    /// <summary>The fields of a sample, by their --query-gpu names (`nvidia-smi --help-query-gpu`).</summary>
    public const string SampleFields = "index,uuid,utilization.gpu,utilization.memory,memory.used,power.draw,temperature.gpu,clocks.sm";

    public async Task<IReadOnlyList<Telemetry.GpuSample>> SampleAsync(IReadOnlyList<string> uuids, CancellationToken cancellationToken)
    {
        var output = await RunAsync(["--query-gpu=" + SampleFields, "--format=csv,noheader,nounits", "--id=" + string.Join(',', uuids)], cancellationToken);
        return ParseSamples(output, uuids, DateTimeOffset.UtcNow);
    }

    /// <summary>nvidia-smi's answer to <see cref="SampleFields"/>, one line per GPU; lines of other GPUs, and lines that are not samples, are left out.</summary>
    public static IReadOnlyList<Telemetry.GpuSample> ParseSamples(string output, IReadOnlyList<string> uuids, DateTimeOffset time)
    {
        var samples = new List<Telemetry.GpuSample>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var fields = line.Split(',', StringSplitOptions.TrimEntries);
            if (fields.Length != 8 || !uuids.Contains(fields[1]) || !int.TryParse(fields[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var index))
                continue;
            samples.Add(new Telemetry.GpuSample(time, fields[1], index, Telemetry.GpuSample.Parse(fields[2]), Telemetry.GpuSample.Parse(fields[3]),
                Telemetry.GpuSample.Parse(fields[4]), Telemetry.GpuSample.Parse(fields[5]), Telemetry.GpuSample.Parse(fields[6]), Telemetry.GpuSample.Parse(fields[7])));
        }
        return samples;
    }

    private async Task<string> RunAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(CallTimeout);
        BufferedCommandResult result;
        try
        {
            result = await Cli.Wrap(program)
                .WithArguments(arguments)
                .WithValidation(CommandResultValidation.None)
                .ExecuteBufferedAsync(timeout.Token);
        }
        catch (Exception error) when (error is System.ComponentModel.Win32Exception or InvalidOperationException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new SystemFailureException($"could not run '{program}' (gpus.nvidia_smi): {error.Message}", error);
        }
        if (result.ExitCode != 0)
            throw new SystemFailureException($"'{program} {string.Join(' ', arguments)}' exited with {result.ExitCode}: {result.StandardError.Trim()}{result.StandardOutput.Trim()}");
        return result.StandardOutput;
    }
}
