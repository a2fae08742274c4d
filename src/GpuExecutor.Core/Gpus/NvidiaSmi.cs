using CliWrap;
using CliWrap.Buffered;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Gpus;

/// <summary>Runs nvidia-smi (through CliWrap, as an argument list: no shell) and parses what it prints.</summary>
public sealed class NvidiaSmi(string program)
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

    /// <summary>The link matrix; <see cref="GpuTopology.Unknown"/> when nvidia-smi cannot give one.</summary>
    public async Task<GpuTopology> TopologyAsync(Action<string> log, CancellationToken cancellationToken)
    {
        try
        {
            return GpuTopology.Parse(await RunAsync(["topo", "-m"], cancellationToken));
        }
        catch (Exception error) when (error is SystemFailureException or FormatException)
        {
            log($"WARNING: GPU topology unknown, choosing GPUs by index: {error.Message}");
            return GpuTopology.Unknown;
        }
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
